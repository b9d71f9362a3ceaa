#!/usr/bin/env bash
# Installs the operator as a user does, shared by `make e2e` (real node) and `make e2e-kind`:
# the namespace enforcing Pod Security "restricted", then `helm upgrade --install` of
# charts/poolpolicy-operator with only the image values overridden, waiting for the rollout.
#
# Usage: install-operator.sh IMAGE_REPOSITORY IMAGE_TAG [extra helm args...]
# Environment: KUBECONFIG / KUBE_CONTEXT (optional), OPERATOR_NAMESPACE (default
# poolpolicy-system), RELEASE (default poolpolicy-operator), KUBECTL / HELM (default on PATH).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
repository="${1:?usage: install-operator.sh IMAGE_REPOSITORY IMAGE_TAG [helm args...]}"
tag="${2:?usage: install-operator.sh IMAGE_REPOSITORY IMAGE_TAG [helm args...]}"
shift 2
ns="${OPERATOR_NAMESPACE:-poolpolicy-system}"
release="${RELEASE:-poolpolicy-operator}"
kubectl="${KUBECTL:-kubectl}"
helm="${HELM:-helm}"
ctx=(); [[ -n "${KUBE_CONTEXT:-}" ]] && ctx=(--context "$KUBE_CONTEXT")
hctx=(); [[ -n "${KUBE_CONTEXT:-}" ]] && hctx=(--kube-context "$KUBE_CONTEXT")

"$kubectl" "${ctx[@]}" create namespace "$ns" --dry-run=client -o yaml | "$kubectl" "${ctx[@]}" apply -f -
"$kubectl" "${ctx[@]}" label namespace "$ns" --overwrite \
  pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/enforce-version=latest
# Helm installs crds/ only on the first install and never upgrades them: apply them first, so
# that a reused cluster gets the current CRD too (see the chart's README).
"$kubectl" "${ctx[@]}" apply --server-side --force-conflicts -f "$repo/charts/poolpolicy-operator/crds/"
"$kubectl" "${ctx[@]}" wait --for=condition=Established crd/poolpolicies.pooling.dbops.io --timeout=60s
# Images were loaded into the node's runtime (no registry): never pull.
"$helm" upgrade --install "$release" "$repo/charts/poolpolicy-operator" "${hctx[@]}" \
  --namespace "$ns" \
  --skip-crds \
  --set image.repository="$repository" \
  --set image.tag="$tag" \
  --set image.pullPolicy=Never \
  --wait --timeout 5m "$@"
"$kubectl" "${ctx[@]}" -n "$ns" rollout status "deployment/$release" --timeout=5m
