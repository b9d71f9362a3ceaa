#!/usr/bin/env bash
# The host side of the real node of the end-to-end test (test/e2e/): its network namespace and
# link, and the teardown that leaves the machine as it was, whatever state a run ended in.
#
#   node.sh up     tear down leftovers of an earlier run, then create the network namespace
#                  "poolpolicy-e2e" joined to the host by a veth pair (host 10.213.0.1, node
#                  10.213.0.2), and the node's folders
#   node.sh down   stop everything the node started and remove what it created: containers and
#                  their shims, mounts, pod network namespaces, cgroups, the node's namespace
#                  (with it every iptables rule, bridge and route kube-proxy and CNI made), the
#                  host's kernel settings kubelet changed, and the folders
#   node.sh env    print the addresses and paths below as NAME=value lines
#   node.sh busy   exit 0 when a node's processes are running (a `make e2e` or `make demo` at
#                  work: `up` would tear its node down), 1 otherwise
#
# Why a network namespace of its own: kube-proxy's and CNI's iptables rules, the pod bridge and
# the forwarding sysctls live there, away from the host's (and Docker's) rules, and go away with
# it. It has no default route: pods reach the node, each other, and the API server on the host's
# end of the veth, and nothing else.
set -euo pipefail

netns=poolpolicy-e2e
host_if=pp-e2e-host
node_if=pp-e2e-node
host_ip=10.213.0.1
node_ip=10.213.0.2
link_cidr=10.213.0.0/30
pod_cidr=10.214.0.0/24
pod_gateway=10.214.0.1
service_cidr=10.215.0.0/24
state=/run/poolpolicy-e2e
data=/var/lib/poolpolicy-e2e
containerd_sock="$state/containerd.sock"
# Host-wide kernel settings kubelet sets at start (its "kernel tunables"); restored by `down`.
kubelet_sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

log() { printf '[node %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

print_env() {
  cat <<ENV
NODE_NETNS=$netns
NODE_HOST_IP=$host_ip
NODE_IP=$node_ip
NODE_POD_CIDR=$pod_cidr
NODE_POD_GATEWAY=$pod_gateway
NODE_SERVICE_CIDR=$service_cidr
NODE_STATE_DIR=$state
NODE_DATA_DIR=$data
NODE_CONTAINERD_SOCK=$containerd_sock
ENV
}

# Processes whose command line names our containerd socket or folders: the daemons of the node
# and the containerd shims, which outlive containerd by design. Each is killed by its PID.
our_pids() {
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
    { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qE "$state|$data" && echo "$pid"
  done
  return 0
}

kill_ours() {
  local pids; pids="$(our_pids)"
  [[ -z "$pids" ]] && return 0
  log "stopping leftover processes: $(echo $pids)"
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 20); do pids="$(our_pids)"; [[ -z "$pids" ]] && return 0; sleep 0.5; done
  kill -KILL $pids 2>/dev/null || true
  sleep 0.5
}

# Every mount below our folders, deepest first.
unmount_ours() {
  local m
  for _ in 1 2 3; do
    mapfile -t mounts < <(awk -v s="$state" -v d="$data" '$5 ~ "^("s"|"d")(/|$)" {print $5}' /proc/self/mountinfo | sort -r)
    ((${#mounts[@]})) || return 0
    for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
  done
}

remove_cgroups() {
  local ctrl
  for ctrl in /sys/fs/cgroup/*/; do
    [[ -d "$ctrl/kubepods" ]] || continue
    find "$ctrl/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

restore_sysctls() {
  [[ -f "$data/sysctl.saved" ]] || return 0
  sysctl -q -p "$data/sysctl.saved" >/dev/null 2>&1 || true
}

down() {
  kill_ours
  # Pod network namespaces are bind mounts under our state folder (containerd's
  # netns_mounts_under_state_dir): unmounting them frees the namespaces.
  unmount_ours
  remove_cgroups
  restore_sysctls
  if ip netns list 2>/dev/null | grep -qw "$netns"; then ip netns delete "$netns"; fi
  ip link delete "$host_if" 2>/dev/null || true
  rm -rf "$state" "$data"
  log "node torn down"
}

check_ranges() {
  local cidr
  for cidr in "$link_cidr" "$pod_cidr" "$service_cidr"; do
    if ip -4 route show to match "${cidr%/*}" | grep -v '^default' | grep -q .; then
      echo "node: $cidr overlaps a route of this machine:" >&2
      ip -4 route show to match "${cidr%/*}" >&2
      exit 1
    fi
  done
}

up() {
  down >/dev/null
  check_ranges
  mkdir -p "$state" "$data"
  for s in "${kubelet_sysctls[@]}"; do echo "$s = $(sysctl -n "$s")"; done >"$data/sysctl.saved"
  ip netns add "$netns"
  ip link add "$host_if" type veth peer name "$node_if"
  ip link set "$node_if" netns "$netns"
  ip addr add "$host_ip/30" dev "$host_if"
  ip link set "$host_if" up
  ip -n "$netns" addr add "$node_ip/30" dev "$node_if"
  ip -n "$netns" link set "$node_if" up
  ip -n "$netns" link set lo up
  # Inside the node's namespace only: routing between pods and the link, and bridged pod
  # traffic through iptables so that kube-proxy's Service rules see it.
  ip netns exec "$netns" sysctl -q -w net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  log "node namespace $netns up: host $host_ip, node $node_ip, pods $pod_cidr, services $service_cidr"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) print_env ;;
  busy) [[ -n "$(our_pids)" ]] ;;
  *) echo "usage: node.sh up|down|env|busy" >&2; exit 2 ;;
esac
