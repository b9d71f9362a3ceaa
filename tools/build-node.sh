#!/usr/bin/env bash
# Builds the binaries of the real node that the end-to-end test joins to the harness's control
# plane (make e2e): kubelet and kube-proxy from the same k8s.io/kubernetes wrapper module as the
# control plane (tools/build-common.sh), and CoreDNS with only the plugins a cluster DNS needs
# (tools/coredns/main.go). The container runtime (containerd, runc, CNI plugins) and iptables
# come from Debian's packages, installed here when missing.
#
# Binaries go to a cache outside the repository, one folder per component and version, like
# tools/build-tools.sh; a warm run builds nothing. Built after the control plane, the Go build
# cache already holds most of the packages kubelet and kube-proxy share with it.
#
# Usage: tools/build-node.sh            build (and install) whatever is missing
#        tools/build-node.sh --print-dir print the bin folder and exit
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${POOLPOLICY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/poolpolicy-operator/tools}"
node_dir="$cache_root/node-$KUBERNETES_VERSION"
coredns_dir="$cache_root/coredns-$COREDNS_VERSION"
bin_dir="$cache_root/bin-node-k8s$KUBERNETES_VERSION-coredns$COREDNS_VERSION"

if [[ "${1:-}" == "--print-dir" ]]; then echo "$bin_dir"; exit 0; fi

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
mkdir -p "$cache_root"
# shellcheck source=build-common.sh
source "$here/build-common.sh"

# Debian's packages: the CRI runtime and what kubelet and kube-proxy call on the node.
packages=(containerd runc containernetworking-plugins iptables conntrack iproute2 ethtool socat mount util-linux)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if ((${#missing[@]})); then
  if [[ "$(id -u)" != 0 ]]; then
    echo "[node] missing Debian packages: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  log "installing from Debian's packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build_node() { build_kubernetes_commands "$1" kubelet kube-proxy; }

build_coredns() {
  local out="$1" mod="$1/src"
  mkdir -p "$mod"
  cp "$here/coredns/main.go" "$mod/main.go"
  printf 'module poolpolicy.local/tools/coredns\n\ngo 1.25\n' >"$mod/go.mod"
  (cd "$mod" && go get "github.com/coredns/coredns@$COREDNS_VERSION" && go mod tidy)
  (cd "$mod" && with_progress coredns go build -v -trimpath -ldflags "-s -w" -o "$out/coredns" .)
  rm -rf "$mod"
}

started=$SECONDS
build_locked "$node_dir" kube-proxy build_node
build_locked "$coredns_dir" coredns build_coredns

mkdir -p "$bin_dir.tmp.$$"
for f in "$node_dir"/* "$coredns_dir/coredns"; do ln -sf "$f" "$bin_dir.tmp.$$/$(basename "$f")"; done
rm -rf "$bin_dir"; mv "$bin_dir.tmp.$$" "$bin_dir"
log "node binaries ready in $bin_dir ($((SECONDS - started))s)"
