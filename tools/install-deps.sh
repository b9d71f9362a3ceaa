#!/usr/bin/env bash
# Installs what the tests and the demo need from Debian's packages when it is missing:
# PostgreSQL (15 or newer: initdb, postgres) and Redis (redis-server). As root it runs
# apt-get; otherwise it says exactly what to install. Go (for `make tools`) is checked too.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

missing=()
postgres_ok=false
for dir in /usr/lib/postgresql/*/bin; do
  major="$(basename "$(dirname "$dir")")"
  if [[ "$major" =~ ^[0-9]+$ ]] && (( major >= POSTGRES_MIN_MAJOR )) && [[ -x "$dir/initdb" ]]; then postgres_ok=true; fi
done
$postgres_ok || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v setpriv >/dev/null || missing+=(util-linux)

if ((${#missing[@]} > 0)); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "[deps] installing from Debian's packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[deps] missing: ${missing[*]}. Install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
if ! command -v go >/dev/null; then
  echo "[deps] Go is required to build the control plane (make tools): install Go 1.25 or newer" >&2
  exit 1
fi
echo "[deps] PostgreSQL $(ls /usr/lib/postgresql | sort -n | tail -1), $(redis-server --version | cut -d' ' -f3), $(go version | cut -d' ' -f3): ok"
