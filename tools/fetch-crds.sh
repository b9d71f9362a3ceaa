#!/usr/bin/env bash
# Fetches the CRDs of the Postgres operators the integration tests install into the local
# control plane: CloudNativePG's Cluster, as CloudNativePG publishes it (config/crd/bases of its
# Go module, from the Go module proxy). The CRD is copied into a cache outside the repository,
# keyed by version (e.g. ~/.cache/poolpolicy-operator/tools/cnpg-v1.27.1/), so a warm run
# downloads nothing and a version bump in tools/versions.env fetches the new one.
#
# Usage: tools/fetch-crds.sh               fetch whatever is missing
#        tools/fetch-crds.sh --print-path  print the Cluster CRD's path and exit
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${POOLPOLICY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/poolpolicy-operator/tools}"
cnpg_dir="$cache_root/cnpg-$CNPG_VERSION"
cnpg_crd="$cnpg_dir/postgresql.cnpg.io_clusters.yaml"

if [[ "${1:-}" == "--print-path" ]]; then echo "$cnpg_crd"; exit 0; fi
[[ -s "$cnpg_crd" ]] && exit 0

command -v go >/dev/null || { echo "[crds] Go is required to fetch CloudNativePG's CRD from the Go module proxy" >&2; exit 1; }
module="github.com/cloudnative-pg/cloudnative-pg@$CNPG_VERSION"
# go mod download needs no go.mod; -json names the unpacked module's folder (in the module cache).
dir="$(cd "$(mktemp -d)" && go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [[ -z "$dir" || ! -s "$dir/config/crd/bases/postgresql.cnpg.io_clusters.yaml" ]]; then
  echo "[crds] $module has no config/crd/bases/postgresql.cnpg.io_clusters.yaml (module folder: ${dir:-none})" >&2
  exit 1
fi
mkdir -p "$cnpg_dir"
# Copied under a temporary name and renamed: a concurrent reader never sees half a file.
cp "$dir/config/crd/bases/postgresql.cnpg.io_clusters.yaml" "$cnpg_crd.tmp.$$"
mv "$cnpg_crd.tmp.$$" "$cnpg_crd"
echo "[crds] CloudNativePG $CNPG_VERSION Cluster CRD: $cnpg_crd"
