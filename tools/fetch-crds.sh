#!/usr/bin/env bash
# Fetches the CRDs of the Postgres operators the integration tests install into the local
# control plane, as each project publishes them, out of its Go module (from the Go module proxy):
#   - CloudNativePG's Cluster: config/crd/bases/postgresql.cnpg.io_clusters.yaml of
#     github.com/cloudnative-pg/cloudnative-pg@CNPG_VERSION;
#   - Zalando's postgresql: manifests/postgresql.crd.yaml of
#     github.com/zalando/postgres-operator@ZALANDO_VERSION.
# Each CRD is copied into a cache outside the repository, keyed by version (e.g.
# ~/.cache/poolpolicy-operator/tools/cnpg-v1.27.1/), so a warm run downloads nothing and a
# version bump in tools/versions.env fetches the new one.
# (Crunchy PGO's module is refused by the proxy, 403 for every version: docs/postgres-operators.md.)
#
# Usage: tools/fetch-crds.sh                       fetch whatever is missing
#        tools/fetch-crds.sh --print-path [NAME]   print a CRD's path and exit (NAME: cnpg, the
#                                                  default, or zalando)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${POOLPOLICY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/poolpolicy-operator/tools}"
cnpg_crd="$cache_root/cnpg-$CNPG_VERSION/postgresql.cnpg.io_clusters.yaml"
zalando_crd="$cache_root/zalando-$ZALANDO_VERSION/postgresql.crd.yaml"

if [[ "${1:-}" == "--print-path" ]]; then
  case "${2:-cnpg}" in
    cnpg) echo "$cnpg_crd" ;;
    zalando) echo "$zalando_crd" ;;
    *) echo "[crds] unknown CRD '${2}': cnpg or zalando" >&2; exit 2 ;;
  esac
  exit 0
fi

# fetch LABEL MODULE@VERSION PATH-IN-MODULE DESTINATION
fetch() {
  local label="$1" module="$2" inside="$3" dest="$4" dir
  [[ -s "$dest" ]] && return 0
  command -v go >/dev/null || { echo "[crds] Go is required to fetch $label's CRD from the Go module proxy" >&2; exit 1; }
  # go mod download needs no go.mod; -json names the unpacked module's folder (in the module cache).
  dir="$(cd "$(mktemp -d)" && go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  if [[ -z "$dir" || ! -s "$dir/$inside" ]]; then
    echo "[crds] $module has no $inside (module folder: ${dir:-none})" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$dest")"
  # Copied under a temporary name and renamed: a concurrent reader never sees half a file.
  cp "$dir/$inside" "$dest.tmp.$$"
  mv "$dest.tmp.$$" "$dest"
  echo "[crds] $label CRD: $dest"
}

fetch "CloudNativePG $CNPG_VERSION Cluster" "github.com/cloudnative-pg/cloudnative-pg@$CNPG_VERSION" \
  config/crd/bases/postgresql.cnpg.io_clusters.yaml "$cnpg_crd"
fetch "Zalando postgres-operator $ZALANDO_VERSION postgresql" "github.com/zalando/postgres-operator@$ZALANDO_VERSION" \
  manifests/postgresql.crd.yaml "$zalando_crd"
