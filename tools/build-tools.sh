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

log() { printf '[tools %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Runs a command while printing elapsed time and the number of packages compiled so far,
# because a cold Kubernetes build is silent for tens of minutes otherwise.
with_progress() {
  local label="$1"; shift
  local output; output="$(mktemp)"
  local started=$SECONDS
  "$@" >"$output" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 15
    kill -0 "$pid" 2>/dev/null &&
      log "$label: $((SECONDS - started))s, $(grep -cv '^#' "$output") packages compiled so far"
  done
  local rc=0; wait "$pid" || rc=$?
  if [[ $rc -ne 0 ]]; then
    tail -40 "$output" >&2; rm -f "$output"
    log "$label: FAILED (exit $rc)"; return "$rc"
  fi
  log "$label: done in $((SECONDS - started))s"
  rm -f "$output"
}

# Builds one component under an exclusive lock; $1 = folder, $2 = marker binary, rest = build function.
build_locked() {
  local dir="$1" marker="$2"; shift 2
  [[ -x "$dir/$marker" ]] && return 0
  exec {lock_fd}>"$dir.lock"
  log "waiting for the build lock of $(basename "$dir")" >&2
  flock "$lock_fd"
  if [[ ! -x "$dir/$marker" ]]; then
    local staging; staging="$(mktemp -d "$dir.staging.XXXXXX")"
    "$@" "$staging"
    rm -rf "$dir"
    mv "$staging" "$dir"
  fi
  flock -u "$lock_fd"
}

# k8s.io/kubernetes requires its staging modules at v0.0.0, so `go install …@version` cannot
# work (kubernetes/kubernetes#79384). A wrapper module replaces each with its published twin.
build_kubernetes() {
  local out="$1" mod="$1/src"
  local staging_version="v0${KUBERNETES_VERSION#v1}"
  mkdir -p "$mod"
  {
    echo "module poolpolicy.local/tools/kubernetes"
    echo
    echo "go 1.25"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    while read -r staged; do
      [[ -n "$staged" ]] && echo "  k8s.io/$staged => k8s.io/$staged $staging_version"
    done <"$here/kubernetes/staging-modules.txt"
    echo ")"
  } >"$mod/go.mod"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local pkgs=(); for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  # `go get -tool` records the commands in go.mod, so `go mod tidy` keeps every dependency they need.
  (cd "$mod" && with_progress "kubernetes modules" go get -tool "${pkgs[@]/%/@$KUBERNETES_VERSION}")
  (cd "$mod" && go mod tidy)
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for c in "${cmds[@]}"; do
    (cd "$mod" && with_progress "$c" go build -v -trimpath -ldflags "$ldflags" -o "$out/$c" "k8s.io/kubernetes/cmd/$c")
  done
  rm -rf "$mod"
}

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
log "tools ready in $bin_dir ($((SECONDS - started))s)"
