#!/usr/bin/env bash
# CI's container step: builds the three images from the repository's Dockerfiles, brings up
# docker-compose.yml (the file users run) with the agent profile and waits until every health
# check is green, runs the Playwright project `compose` (e2e/compose-stack.spec.ts) against it,
# then removes it with its volumes. Docker where an engine and its registries answer; otherwise podman with local
# stand-ins for the base images (scripts/ci/podman-engine.sh). Prints the time of each phase
# and the image sizes. Needs ports 8000, 8080 and 8001 free (compose publishes them).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/ci/node.sh

started=$SECONDS
phase() { echo "containers: $1 after $((SECONDS - started)) s"; }

for port in 8000 8080 8001; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; docker-compose.yml publishes it" >&2
    exit 1
  fi
done

keycloak_base=$(awk '/^FROM /{print $2; exit}' keycloak/Dockerfile)
if command -v docker >/dev/null && docker info >/dev/null 2>&1 && docker pull -q "$keycloak_base" >/dev/null 2>&1; then
  ENGINE=docker
  COMPOSE=(docker compose)
else
  ENGINE=podman
  source scripts/ci/podman-engine.sh
  podman_engine_start
fi
engine() { if [ "$ENGINE" = docker ]; then docker "$@"; else podman "$@"; fi; }
phase "$ENGINE ready"

# The agent's model: the scripted OpenAI-compatible server the compose spec starts on this host, at
# the host's own address (a container reaches it through its network's gateway).
E2E_LLM_HOST=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
E2E_LLM_PORT=$(node -e 'const s=require("net").createServer().listen(0,()=>{console.log(s.address().port);s.close()})')
E2E_AGENT_CHAT_TOKEN=$(node -e 'console.log(require("crypto").randomBytes(24).toString("base64url"))')
export E2E_LLM_HOST E2E_LLM_PORT E2E_AGENT_CHAT_TOKEN
export API_HOST=openai OPENAI_API_KEY=scripted-model OPENAI_BASE_URL="http://$E2E_LLM_HOST:$E2E_LLM_PORT/v1"
export AGENT_CHAT_TOKEN=$E2E_AGENT_CHAT_TOKEN
compose=("${COMPOSE[@]}" --profile agent)

cleanup() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    echo "containers: failed; the services' last log lines:" >&2
    "${compose[@]}" logs --no-color --tail=60 >&2 || true
  fi
  "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  if [ "$ENGINE" = podman ]; then podman_engine_stop; fi
  phase "done (exit $status)"
}
trap cleanup EXIT

# The production Keycloak image (Azure's), which compose does not run: built to prove it builds.
engine build -q -t mcp-auth-stack-keycloak keycloak >/dev/null
# The realm it imports has the clients' service accounts and no one else: the demo users'
# passwords are public (keycloak/realm-for-deployment.ts).
engine run --rm --entrypoint cat mcp-auth-stack-keycloak /opt/keycloak/data/import/realm-mcp.json |
  node -e 'let text = "";
    process.stdin.on("data", (chunk) => (text += chunk)).on("end", () => {
      const users = JSON.parse(text).users ?? [];
      const people = users.filter((user) => !user.serviceAccountClientId).map((user) => user.username);
      if (people.length > 0 || users.length === 0) {
        console.error(`containers: the Keycloak image imports people: ${people.join(", ") || "no users at all"}`);
        process.exit(1);
      }
    });'
# Its entrypoint refuses to start while a placeholder of that realm is unset (the deployed
# realm has no demo defaults), and with each one set runs kc.sh with the arguments given.
placeholders=$(node keycloak/realm-for-deployment.ts keycloak/realm-mcp.json |
  node -e 'let text = "";
    process.stdin.on("data", (chunk) => (text += chunk)).on("end", () => {
      console.log([...new Set([...text.matchAll(/\$\{([A-Z][A-Z0-9_]*)\}/g)].map((m) => m[1]))].join(" "));
    });')
set +e
refusal=$(engine run --rm mcp-auth-stack-keycloak 2>&1)
refused=$?
set -e
if [ "$refused" -ne 78 ] || [[ $refusal != *"needs "*KEYCLOAK_AGENT_CLIENT_SECRET* ]]; then
  echo "containers: the Keycloak image started without its realm's placeholders (exit $refused): $refusal" >&2
  exit 1
fi
placeholder_env=()
for name in $placeholders; do placeholder_env+=(-e "$name=container-step-$name"); done
version=$(engine run --rm "${placeholder_env[@]}" mcp-auth-stack-keycloak --version 2>&1)
if [[ $version != *"Keycloak $(awk -F: '/^FROM /{print $2; exit}' keycloak/Dockerfile | cut -d' ' -f1)"* ]]; then
  echo "containers: the Keycloak image with every placeholder set did not run kc.sh --version: $version" >&2
  exit 1
fi
phase "keycloak/Dockerfile built; its realm has no demo users; its entrypoint refuses unset placeholders"
"${compose[@]}" build -q
phase "server and agent images built"
engine images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'mcp-auth-stack' || true

"${compose[@]}" up --detach --wait --wait-timeout 600
phase "compose up: every service healthy"

# The server starts from the code cache its image's build wrote (docs/decisions.md #48): V8
# accepts it under the flags the container runs with (its PID 1's command line). A warm-up that
# finds its cache accepted writes nothing.
cache_check=$("${compose[@]}" exec -T server sh -c \
  'NODE_DEBUG=code-cache $(tr "\0" " " < /proc/1/cmdline) --warm-up 2>&1' || true)
if ! grep -q 'server.cjs.code-cache accepted' <<<"$cache_check"; then
  echo "containers: the server image's code cache was not used:" >&2
  echo "$cache_check" >&2
  exit 1
fi
phase "server image: code cache accepted"

# Its HTML report goes to playwright-report/compose/, traces of failures to test-results/e2e/compose/.
E2E_STACK=compose pnpm test:e2e --project compose
phase "end-to-end test passed"
