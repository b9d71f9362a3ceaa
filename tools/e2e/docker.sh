#!/usr/bin/env bash
# Docker for the real node's images, one definition for its two users:
#
#   docker.sh usable   exit 0 when Docker can be used here: its daemon answers, or dockerd is
#                      installed and can be started. `make demo` then tells the story on real pods
#                      (test/e2e/demo.ts); otherwise it runs on kwok's simulated pods.
#   source docker.sh   defines ensure_docker (start dockerd when needed, installing Debian's
#                      docker.io if missing) and stop_dockerd, for tools/e2e/images.sh.
set -euo pipefail

docker_usable() { docker info >/dev/null 2>&1 || command -v dockerd >/dev/null; }

# A daemon started by ensure_docker is stopped by stop_dockerd; one that was running is left alone.
started_dockerd=""
stop_dockerd() {
  [[ -n "$started_dockerd" ]] || return 0
  echo "[docker] stopping the dockerd started for this build (pid $started_dockerd)"
  kill "$started_dockerd" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$started_dockerd" 2>/dev/null || return 0; sleep 0.5; done
}

# ensure_docker LOG_DIR: the daemon answers on return (dockerd's log goes to LOG_DIR/dockerd.log).
ensure_docker() {
  local log_dir="$1"
  docker info >/dev/null 2>&1 && return 0
  if ! command -v dockerd >/dev/null; then
    echo "[docker] installing Debian's docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  fi
  docker info >/dev/null 2>&1 && return 0
  echo "[docker] starting dockerd (log: $log_dir/dockerd.log)"
  dockerd >"$log_dir/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  echo "docker: dockerd did not answer within 60 s; see $log_dir/dockerd.log" >&2
  exit 1
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  case "${1:-}" in
    usable) docker_usable ;;
    *) echo "usage: docker.sh usable (or source it)" >&2; exit 2 ;;
  esac
fi
