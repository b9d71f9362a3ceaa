#!/usr/bin/env bash
# Builds the control-plane binaries the tests and the demo run, from the Go module proxy:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and helm.
#
# Binaries go to a cache outside the repository, one folder per component and version
# (e.g. ~/.cache/poolpolicy-operator/tools/kubernetes-v1.35.4/), so a version bump in
# tools/versions.env builds only what changed, and a warm run builds nothing.
# Each component is built under an flock and moved into place atomically, so two builds
# started at once neither collide nor leave a half-written binary behind.
#
# Usage: tools/build-tools.sh            build whatever is missing
#        tools/build-tools.sh --print-dir print the bin folder and exit
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${POOLPOLICY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/poolpolicy-operator/tools}"
k8s_dir="$cache_root/kubernetes-$KUBERNETES_VERSION"
etcd_dir="$cache_root/etcd-$ETCD_VERSION"
kwok_dir="$cache_root/kwok-$KWOK_VERSION"
helm_dir="$cache_root/helm-$HELM_VERSION"
bin_dir="$cache_root/bin-k8s$KUBERNETES_VERSION-etcd$ETCD_VERSION-kwok$KWOK_VERSION-helm$HELM_VERSION"

if [[ "${1:-}" == "--print-dir" ]]; then echo "$bin_dir"; exit 0; fi

export CGO_ENABLED=0
# Two cores: one compile job per core keeps peak memory near 3 GiB for the Kubernetes binaries.
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
mkdir -p "$cache_root"

# shellcheck source=build-common.sh
source "$here/build-common.sh"

# etcd's server module has replace directives, so it is built from a wrapper main of ours.
build_etcd() {
  local out="$1" mod="$1/src"
  mkdir -p "$mod"
  cp "$here/etcd/main.go" "$mod/main.go"
  printf 'module poolpolicy.local/tools/etcd\n\ngo 1.25\n' >"$mod/go.mod"
  (cd "$mod" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go mod tidy)
  (cd "$mod" && with_progress etcd go build -v -trimpath -ldflags "-s -w" -o "$out/etcd" .)
  rm -rf "$mod"
}

build_kubernetes() { build_kubernetes_commands "$1" kube-apiserver kube-controller-manager kube-scheduler kubectl; }

build_go_install() {
  local name="$1" pkg="$2" out="$3" ldflags="-s -w ${4:-}"
  GOBIN="$out" with_progress "$name" go install -v -trimpath -ldflags "$ldflags" "$pkg"
}
build_kwok() { build_go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "$1"; }
# Helm reports its version from a linker variable, as its own release build sets it.
build_helm() { build_go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$1" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"; }

started=$SECONDS
build_locked "$etcd_dir" etcd build_etcd
build_locked "$kwok_dir" kwok build_kwok
build_locked "$helm_dir" helm build_helm
build_locked "$k8s_dir" kubectl build_kubernetes

# One folder of links that the harness, the Makefile and the demo put on PATH.
mkdir -p "$bin_dir.tmp.$$"
for f in "$k8s_dir"/* "$etcd_dir/etcd" "$kwok_dir/kwok" "$helm_dir/helm"; do
  ln -sf "$f" "$bin_dir.tmp.$$/$(basename "$f")"
done
rm -rf "$bin_dir"; mv "$bin_dir.tmp.$$" "$bin_dir"
# Not built, but fetched from the same Go module proxy and cached the same way: the Postgres
# operators' CRDs the integration tests install (CloudNativePG's Cluster, Zalando's postgresql).
bash "$here/fetch-crds.sh"
log "tools ready in $bin_dir ($((SECONDS - started))s)"
