# Helpers shared by tools/build-tools.sh (control plane) and tools/build-node.sh (real node):
# progress output for long Go builds, builds under a lock into a cache folder, and the wrapper
# module that builds commands of k8s.io/kubernetes. Expects $here (the tools folder) and the
# versions of tools/versions.env.

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
# Builds the commands named after $1 (e.g. kubelet kube-proxy) from k8s.io/kubernetes/cmd/ into $1.
build_kubernetes_commands() {
  local out="$1" mod="$1/src"; shift
  local cmds=("$@")
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
