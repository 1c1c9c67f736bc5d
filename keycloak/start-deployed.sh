#!/bin/bash
# The deployed Keycloak's entrypoint: refuses to start while a placeholder of the realm it
# imports has no value, then runs kc.sh with the image's command.
#
# realm-for-deployment.ts leaves every placeholder bare (`${KEYCLOAK_AGENT_CLIENT_SECRET}`, no
# demo default), and Keycloak's import keeps an unresolved placeholder as literal text: without
# this check a missing secret would become the client secret "${KEYCLOAK_AGENT_CLIENT_SECRET}",
# printed in this repository. Bash alone (the Keycloak image has no grep or sed to rely on).
set -euo pipefail

home=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The environment's names only: bash's own variables (HOSTNAME, RANDOM) are not Keycloak's.
declare -A exported=()
for name in $(compgen -e); do exported[$name]=1; done
missing=()
for realm in "$home"/data/import/*.json; do
  [ -e "$realm" ] || continue
  rest=$(<"$realm")
  # Upper-case names only: lower-case `${...}` in a realm are Keycloak's own message keys.
  while [[ $rest =~ \$\{([A-Z][A-Z0-9_]*)\}(.*) ]]; do
    name=${BASH_REMATCH[1]}
    rest=${BASH_REMATCH[2]}
    if [ -z "${exported[$name]:-}" ] || [ -z "${!name}" ]; then
      [[ " ${missing[*]} " == *" $name "* ]] || missing+=("$name")
    fi
  done
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "keycloak: not starting: the realm to import needs ${missing[*]} (set each in the container's environment; infra/azure/main.bicep does)" >&2
  exit 78
fi
exec "$home/bin/kc.sh" "$@"
