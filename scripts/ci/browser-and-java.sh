#!/usr/bin/env bash
# Installs what the Keycloak and browser tests need and a clean machine may lack: Debian's
# Chromium (Playwright drives it; its own browser download cannot work here), Maven (fetches
# the Keycloak distribution from Maven Central) and unzip. Java 21+ must already be there
# (the machines here ship Temurin 25 in /usr/lib/jvm); the tests say so loudly if it is not.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
