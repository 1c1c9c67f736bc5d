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
E2E_LLM_HOST=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' || true)
if [ -z "$E2E_LLM_HOST" ]; then
  echo "containers.sh: no address of this host for the containers to reach (ip -4 route get 1.1.1.1 gave none; is iproute2 installed, is there a default route?)" >&2
  exit 1
fi
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
  if [ -n "${standalone:-}" ]; then engine rm --force "$standalone" >/dev/null 2>&1 || true; fi
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

# The README's two lines for the server image alone ("The server image alone"), read from the
# README and run as written but for three things: this engine for `docker`, compose's
# PostgreSQL for the reader's `postgres://…`, and compose's network to reach it. Compose's server
# and agent give port 8000 up for it.
mapfile -t image_lines < <(node -e '
  const text = require("fs").readFileSync("README.md", "utf8");
  const block = text.split("```sh\n").map((b) => b.split("```")[0]).find((b) => b.includes("docker build -f apps/server/Dockerfile"));
  if (!block) { console.error("README: no block with docker build -f apps/server/Dockerfile"); process.exit(1); }
  for (const line of block.trim().split("\n")) console.log(line);')
if [ "${#image_lines[@]}" -ne 2 ] || [[ ${image_lines[0]} != "docker build "* ]] || [[ ${image_lines[1]} != "docker run "* ]]; then
  echo "containers: the README's server image block is not a docker build and a docker run line: ${image_lines[*]}" >&2
  exit 1
fi
# Words split on spaces only: a line with quotes, expansions or escapes would run as something
# else here than in a shell, so it stops the step instead.
if [[ ${image_lines[*]} == *[\"\'\$\\\`]* ]]; then
  echo "containers: the README's server image lines need a shell to read them: ${image_lines[*]}" >&2
  exit 1
fi
"${compose[@]}" stop agent server >/dev/null 2>&1
network=$(engine inspect "$("${compose[@]}" ps -q postgres)" \
  --format '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}')
read -r -a build_args <<<"${image_lines[0]#docker }"
# Docker's image format, as compose's builds get it: its HEALTHCHECK kept.
BUILDAH_FORMAT=docker engine "${build_args[@]}" >/dev/null
run_line=${image_lines[1]#docker run }
database_url="postgres://mcp:${POSTGRES_PASSWORD:-mcp-demo-password}@postgres:5432/expenses"
with_database=${run_line//postgres:\/\/…/"$database_url"}
if [ "$with_database" = "$run_line" ]; then
  echo "containers: the README's docker run line no longer has DATABASE_URL=postgres://…: $run_line" >&2
  exit 1
fi
read -r -a run_args <<<"$with_database"
standalone=$(engine run --detach --network "$network" "${run_args[@]}")
standalone_answered=$(node -e '
  const deadline = Date.now() + 60_000;
  (async () => {
    for (;;) {
      try {
        const health = await fetch("http://127.0.0.1:8000/health");
        const mcp = await fetch("http://127.0.0.1:8000/mcp", { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }) });
        console.log(`${health.status} ${mcp.status} ${mcp.headers.get("www-authenticate")}`);
        return;
      } catch (error) {
        if (Date.now() > deadline) { console.log(`no answer: ${error.message}`); return; }
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  })();')
# Key mode by default: up, and a call without a key is told how to send one.
if [[ $standalone_answered != '200 401 Bearer realm="mcp"'* ]]; then
  echo "containers: the server image alone, as the README runs it, answered: $standalone_answered; its log:" >&2
  engine logs --tail 40 "$standalone" >&2 || true
  exit 1
fi
engine rm --force "$standalone" >/dev/null
standalone=
phase "the README's server image lines: built, run on compose's PostgreSQL, /health 200, /mcp 401 without a key"
