#!/usr/bin/env bash
# Builds the images of the real-node end-to-end test and saves each as a tar that
# `ctr -n k8s.io images import` loads into the node's containerd (there is no registry here):
#
#   debian    Debian 12 minbase from debootstrap (the base of all the others)
#   node      Node 24 (the npm package `node`'s binary) + npm: stands in for node:24-bookworm-slim
#   operator  our Dockerfile, built as users build it (classic builder, NODE_IMAGE = the above)
#   postgres  Debian's postgresql-15, with an entrypoint that initialises PGDATA
#   redis     Debian's redis-server
#   pgbouncer Debian's pgbouncer (and psql): the pooler the operator runs for spec.pooler
#   pause     the pod sandbox: a static Go binary (images/pause/main.go) on scratch
#   app       the incident's Python service: an asyncpg pool sized by DB_POSTGRES_MIN/MAX_CONN
#
# Each image is keyed by a hash of everything it is built from (its Dockerfile and files, its
# base's key, for the operator the sources the Dockerfile copies), and its tar is cached in
# ~/.cache/poolpolicy-operator/images: a warm run with nothing changed needs no Docker at all.
# Docker is installed (Debian's docker.io) and its daemon started only when something must be
# built; a daemon this script started is stopped at its end.
#
# Usage: tools/e2e/images.sh OUT_ENV   writes NAME_IMAGE=tag and NAME_TAR=path lines to OUT_ENV
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out_env="${1:?usage: images.sh OUT_ENV}"
cache="${POOLPOLICY_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/poolpolicy-operator/images}"
mkdir -p "$cache"
log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- Docker, only when needed ------------------------------------------------------------------
source "$here/docker.sh"
trap stop_dockerd EXIT

# --- keys --------------------------------------------------------------------------------------
# sha256 of the named files (path and content) and of any extra words, first 16 hex digits.
# A path inside the checkout counts relative to it: a clone elsewhere (CI's fresh checkout, a
# git worktree) finds the images its twin built.
key_of() {
  local words=() files=()
  for a in "$@"; do if [[ -f "$a" ]]; then files+=("$a"); else words+=("$a"); fi; done
  { printf '%s\n' "${words[@]}"; for f in "${files[@]}"; do echo "${f#"$repo"/}"; sha256sum <"$f"; done; } |
    sha256sum | cut -c1-16
}

# Writes the tar of image $2 (built by function $3 when missing) and records it as $1.
image() {
  local name="$1" tag="$2" build="$3"
  local tar="$cache/$name-${tag##*:}.tar"
  if [[ ! -s "$tar" ]]; then
    ensure_docker "$cache"
    if ! docker image inspect "$tag" >/dev/null 2>&1; then
      local started=$SECONDS
      log "building $tag"
      "$build" "$tag"
      log "built $tag in $((SECONDS - started))s"
    fi
    docker save -o "$tar.tmp" "$tag"
    mv "$tar.tmp" "$tar"
    # One tar per image: the one of the previous sources goes (the operator's is ~300 MB a change).
    local old
    for old in "$cache/$name"-*.tar; do [[ "$old" == "$tar" ]] || rm -f "$old"; done
  fi
  local upper; upper="$(tr '[:lower:]' '[:upper:]' <<<"$name")"
  printf '%s_IMAGE=%s\n%s_TAR=%s\n' "$upper" "$tag" "$upper" "$tar" >>"$out_env"
}

# Loads the saved base image into Docker when a build needs it.
need_image() { docker image inspect "$1" >/dev/null 2>&1 || docker load -i "$2" >/dev/null; }

# --- debian ------------------------------------------------------------------------------------
mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
mirror="${mirror:-http://deb.debian.org/debian}"
debian_key="$(key_of bookworm minbase)"
debian_tag="poolpolicy-e2e/debian:$debian_key"
build_debian() {
  command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  local rootfs; rootfs="$(mktemp -d)"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log" >&2; rm -rf "$rootfs"; return 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$1" >/dev/null
  rm -rf "$rootfs"
}
: >"$out_env"
image debian "$debian_tag" build_debian
debian_tar="$cache/debian-$debian_key.tar"

# Builds the Dockerfile in $here/images/$name with the debian base, from a context dir $2.
build_on_debian() {
  local tag="$1" context="$2"
  need_image "$debian_tag" "$debian_tar"
  DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$debian_tag" -t "$tag" "$context" >/dev/null
}

# --- node --------------------------------------------------------------------------------------
node_bin="$repo/node_modules/node/bin/node"
npm_dir="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"
ca_bundle=/etc/ssl/certs/ca-certificates.crt
node_key="$(key_of "$debian_key" "$here/images/node/Dockerfile" "$node_bin" "$npm_dir/package.json" "$ca_bundle")"
node_tag="poolpolicy-e2e/node:$node_key"
build_node() {
  local ctx; ctx="$(mktemp -d)"
  cp "$here/images/node/Dockerfile" "$ca_bundle" "$ctx/"
  cp -L "$node_bin" "$ctx/node"
  cp -a "$npm_dir" "$ctx/npm"
  build_on_debian "$1" "$ctx"; local rc=$?; rm -rf "$ctx"; return $rc
}
image node "$node_tag" build_node

# --- operator: our Dockerfile, unchanged ---------------------------------------------------------
mapfile -t operator_files < <(cd "$repo" && git ls-files -co --exclude-standard Dockerfile .dockerignore package.json package-lock.json tsconfig.json src | sort)
operator_key="$(key_of "$node_key" "${operator_files[@]/#/$repo/}")"
operator_tag="poolpolicy-operator:e2e-$operator_key"
build_operator() {
  need_image "$node_tag" "$cache/node-$node_key.tar"
  # The classic builder: BuildKit would pull the `# syntax=` frontend from a registry.
  (cd "$repo" && DOCKER_BUILDKIT=0 docker build -q --build-arg "NODE_IMAGE=$node_tag" -t "$1" . >/dev/null)
}
image operator "$operator_tag" build_operator

# --- postgres, redis ---------------------------------------------------------------------------
postgres_tag="poolpolicy-e2e/postgres:$(key_of "$debian_key" "$here/images/postgres/Dockerfile" "$here/images/postgres/entrypoint.sh")"
build_postgres() { build_on_debian "$1" "$here/images/postgres"; }
image postgres "$postgres_tag" build_postgres

redis_tag="poolpolicy-e2e/redis:$(key_of "$debian_key" "$here/images/redis/Dockerfile")"
build_redis() { build_on_debian "$1" "$here/images/redis"; }
image redis "$redis_tag" build_redis

pgbouncer_tag="poolpolicy-e2e/pgbouncer:$(key_of "$debian_key" "$here/images/pgbouncer/Dockerfile")"
build_pgbouncer() { build_on_debian "$1" "$here/images/pgbouncer"; }
image pgbouncer "$pgbouncer_tag" build_pgbouncer

# --- app: asyncpg from PyPI, installed on the host for Debian 12's Python 3.11 -------------------
asyncpg_version=0.30.0
app_tag="poolpolicy-e2e/app:$(key_of "$debian_key" "asyncpg==$asyncpg_version" "$here/images/app/Dockerfile" "$here/images/app/app.py")"
build_app() {
  local ctx; ctx="$(mktemp -d)"
  cp "$here/images/app/Dockerfile" "$here/images/app/app.py" "$ctx/"
  python3 -m pip install -q --target "$ctx/site" --only-binary=:all: --python-version 3.11 \
    --implementation cp --platform manylinux2014_x86_64 "asyncpg==$asyncpg_version"
  build_on_debian "$1" "$ctx"; local rc=$?; rm -rf "$ctx"; return $rc
}
image app "$app_tag" build_app
# --- pause: the pod sandbox, built with the host's Go -------------------------------------------
pause_tag="poolpolicy-e2e/pause:$(key_of "$(go env GOVERSION)" "$here/images/pause/Dockerfile" "$here/images/pause/main.go")"
build_pause() {
  local ctx; ctx="$(mktemp -d)"
  cp "$here/images/pause/Dockerfile" "$here/images/pause/main.go" "$ctx/"
  printf 'module poolpolicy.local/pause\n\ngo 1.25\n' >"$ctx/go.mod"
  (cd "$ctx" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o pause .)
  DOCKER_BUILDKIT=0 docker build -q -t "$1" "$ctx" >/dev/null; local rc=$?; rm -rf "$ctx"; return $rc
}
image pause "$pause_tag" build_pause
log "images ready: $out_env"
