#!/usr/bin/env bash
# End-to-end run on a kind cluster, for machines with Docker (`make e2e-kind`):
#
#   1. a kind cluster (KIND_CLUSTER_NAME, default poolpolicy-e2e; reused if it exists)
#   2. the operator image, built from the Dockerfile and loaded into the kind nodes
#   3. the Helm chart, in a namespace that enforces Pod Security "restricted"
#   4. in namespace "demo": PostgreSQL 16 (StatefulSet "postgres", Secret "pg-admin", headless
#      Service "postgres", database "governance"), Redis 7 (Secret "redis" with key "url"), and two
#      app Deployments labelled app.kubernetes.io/part-of=governance
#   5. examples/poolpolicy.yaml, then waits until the PoolPolicy is Ready and prints it
#
# The cluster is deleted at the end, pass or fail, unless KEEP_CLUSTER=1.
#
# Environment:
#   KIND_CLUSTER_NAME   cluster name (default poolpolicy-e2e)
#   KIND_NODE_IMAGE     kindest/node image (default: kind's own default; the chart needs >= 1.29)
#   KEEP_CLUSTER=1      keep the cluster (and everything in it) for a look afterwards
#   WAIT_TIMEOUT        how long to wait for the PoolPolicy to be Ready (default 10m)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

cluster="${KIND_CLUSTER_NAME:-poolpolicy-e2e}"
image="poolpolicy-operator:e2e"
operator_ns="poolpolicy-system"
release="poolpolicy-operator"
demo_ns="demo"
wait_timeout="${WAIT_TIMEOUT:-10m}"

log() { printf '\n[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- prerequisites -----------------------------------------------------------------------------
missing=()
for tool in kind kubectl helm docker; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "e2e-kind: missing on PATH: ${missing[*]}" >&2
  echo "  kind:    https://kind.sigs.k8s.io/docs/user/quick-start/#installation" >&2
  echo "  kubectl: https://kubernetes.io/docs/tasks/tools/" >&2
  echo "  helm:    https://helm.sh/docs/intro/install/ (v3)" >&2
  echo "  docker:  https://docs.docker.com/engine/install/" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "e2e-kind: docker is installed but the daemon does not answer (is it running? may this user use it?)" >&2
  exit 1
fi

# Every kubectl/helm call targets the kind cluster's context explicitly, never whatever the
# user's current context happens to be.
ctx="kind-$cluster"
k() { kubectl --context "$ctx" "$@"; }

# --- cleanup -----------------------------------------------------------------------------------
created_cluster=0
on_exit() {
  local rc=$?
  if ((rc != 0)) && kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    # Enough to diagnose a failure without keeping the cluster.
    log "FAILED (exit $rc): diagnostics"
    k get pods -A -o wide || true
    k -n "$operator_ns" logs "deployment/$release" --tail=200 || true
    k -n "$demo_ns" describe pp governance || true
    k -n "$demo_ns" get events --sort-by=.lastTimestamp | tail -40 || true
  fi
  if [[ "${KEEP_CLUSTER:-0}" == "1" ]]; then
    log "KEEP_CLUSTER=1: keeping cluster $cluster (kubectl --context $ctx ...; delete: kind delete cluster --name $cluster)"
  elif kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "deleting cluster $cluster"
    kind delete cluster --name "$cluster" || true
  fi
  exit "$rc"
}
trap on_exit EXIT

# --- 1. cluster --------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  log "reusing kind cluster $cluster"
else
  log "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --wait 3m ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
  created_cluster=1
fi
k cluster-info >/dev/null

# --- 2. image ----------------------------------------------------------------------------------
log "building $image"
docker build -t "$image" .
log "loading $image into the kind nodes"
kind load docker-image "$image" --name "$cluster"

# --- 3. operator -------------------------------------------------------------------------------
log "installing the chart into $operator_ns (Pod Security restricted enforced)"
# The same install step as the real-node story of `make e2e` (test/e2e/story.test.ts).
KUBE_CONTEXT="$ctx" OPERATOR_NAMESPACE="$operator_ns" RELEASE="$release" \
  bash tools/e2e/install-operator.sh poolpolicy-operator e2e --set logLevel=debug
# A reused cluster with an unchanged chart keeps the old pod; restart it to run the new image.
((created_cluster)) || k -n "$operator_ns" rollout restart "deployment/$release"
k -n "$operator_ns" rollout status "deployment/$release" --timeout=5m

# --- 4. workloads in demo ----------------------------------------------------------------------
log "deploying PostgreSQL, Redis and two apps into $demo_ns"
k create namespace "$demo_ns" --dry-run=client -o yaml | k apply -f -

# The admin credentials the policy names (credentialsSecret: pg-admin, keys username/password).
# Generated once per cluster: a reused cluster keeps its PostgreSQL volume and thus its password.
if ! k -n "$demo_ns" get secret pg-admin >/dev/null 2>&1; then
  k -n "$demo_ns" create secret generic pg-admin \
    --from-literal=username=postgres \
    --from-literal=password="e2e-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
fi
# The policy's redis.urlSecret (name redis, key url).
k -n "$demo_ns" create secret generic redis \
  --from-literal=url="redis://redis.$demo_ns.svc.cluster.local:6379/0" \
  --dry-run=client -o yaml | k apply -f -

k apply -n "$demo_ns" -f - <<'EOF'
# Headless: the policy's host postgres.demo.svc.cluster.local resolves to the pod itself.
apiVersion: v1
kind: Service
metadata:
  name: postgres
  labels: { app.kubernetes.io/name: postgres }
spec:
  clusterIP: None
  selector: { app.kubernetes.io/name: postgres }
  ports:
    - { name: postgres, port: 5432, targetPort: postgres }
---
# The restart workload of the policy (spec.postgres.restart.workload: StatefulSet postgres).
# Its data is on a PersistentVolumeClaim (kind's default StorageClass): ALTER SYSTEM writes
# postgresql.auto.conf into the data directory, which must survive the operator's restart.
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: postgres
  labels: { app.kubernetes.io/name: postgres }
spec:
  serviceName: postgres
  replicas: 1
  selector:
    matchLabels: { app.kubernetes.io/name: postgres }
  template:
    metadata:
      labels: { app.kubernetes.io/name: postgres }
    spec:
      terminationGracePeriodSeconds: 30
      containers:
        - name: postgres
          image: postgres:16
          env:
            - name: POSTGRES_USER
              valueFrom: { secretKeyRef: { name: pg-admin, key: username } }
            - name: POSTGRES_PASSWORD
              valueFrom: { secretKeyRef: { name: pg-admin, key: password } }
            # The entrypoint creates this database on first start: the policy's "governance".
            - name: POSTGRES_DB
              value: governance
            # A subdirectory: the volume's root holds lost+found on some provisioners.
            - name: PGDATA
              value: /var/lib/postgresql/data/pgdata
          ports:
            - { name: postgres, containerPort: 5432 }
          readinessProbe:
            exec:
              command: ["sh", "-c", "pg_isready -U \"$POSTGRES_USER\" -d governance -h 127.0.0.1"]
            periodSeconds: 5
          volumeMounts:
            - { name: data, mountPath: /var/lib/postgresql/data }
  volumeClaimTemplates:
    - metadata: { name: data }
      spec:
        accessModes: [ReadWriteOnce]
        resources: { requests: { storage: 1Gi } }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis
  labels: { app.kubernetes.io/name: redis }
spec:
  replicas: 1
  selector:
    matchLabels: { app.kubernetes.io/name: redis }
  template:
    metadata:
      labels: { app.kubernetes.io/name: redis }
    spec:
      containers:
        - name: redis
          image: redis:7
          ports:
            - { name: redis, containerPort: 6379 }
          readinessProbe:
            exec: { command: ["redis-cli", "ping"] }
            periodSeconds: 5
---
apiVersion: v1
kind: Service
metadata:
  name: redis
spec:
  selector: { app.kubernetes.io/name: redis }
  ports:
    - { name: redis, port: 6379, targetPort: redis }
---
# The policy's targets (selector app.kubernetes.io/part-of=governance): the operator injects
# DB_POSTGRES_MIN_CONN / DB_POSTGRES_MAX_CONN into their containers. pause does nothing with
# them; the point is the Deployment spec and its rollout.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: governance-api
  labels: { app.kubernetes.io/name: governance-api, app.kubernetes.io/part-of: governance }
spec:
  replicas: 2
  selector:
    matchLabels: { app.kubernetes.io/name: governance-api }
  template:
    metadata:
      labels: { app.kubernetes.io/name: governance-api, app.kubernetes.io/part-of: governance }
    spec:
      containers:
        - name: api
          image: registry.k8s.io/pause:3.10
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: governance-worker
  labels: { app.kubernetes.io/name: governance-worker, app.kubernetes.io/part-of: governance }
spec:
  replicas: 1
  selector:
    matchLabels: { app.kubernetes.io/name: governance-worker }
  template:
    metadata:
      labels: { app.kubernetes.io/name: governance-worker, app.kubernetes.io/part-of: governance }
    spec:
      containers:
        - name: worker
          image: registry.k8s.io/pause:3.10
EOF

k -n "$demo_ns" rollout status statefulset/postgres --timeout=5m
k -n "$demo_ns" rollout status deployment/redis --timeout=3m
k -n "$demo_ns" rollout status deployment/governance-api --timeout=3m
k -n "$demo_ns" rollout status deployment/governance-worker --timeout=3m
# POSTGRES_DB created it on first start; check rather than assume (a reused volume from an
# older run, or an init that failed half-way, would not have it).
k -n "$demo_ns" exec postgres-0 -- sh -c 'psql -U "$POSTGRES_USER" -d governance -tAc "select current_database()"'

# --- 5. the policy -----------------------------------------------------------------------------
log "applying examples/poolpolicy.yaml"
k apply -f examples/poolpolicy.yaml
log "waiting up to $wait_timeout for PoolPolicy demo/governance to be Ready"
k wait --for=condition=Ready pp/governance -n "$demo_ns" --timeout="$wait_timeout"

log "result"
k get pp -n "$demo_ns"
k describe pp governance -n "$demo_ns"
k -n "$demo_ns" get deployment governance-api \
  -o jsonpath='{range .spec.template.spec.containers[*].env[*]}{.name}={.value}{"\n"}{end}'
log "e2e passed"
