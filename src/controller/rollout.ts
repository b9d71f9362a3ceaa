/**
 * "Has this workload finished rolling out?" — the same test `kubectl rollout status` makes,
 * shared by the operator (before it verifies a restart, and for target status) and the tests.
 */
import type { V1Deployment, V1StatefulSet } from "@kubernetes/client-node";

export function deploymentRolledOut(d: V1Deployment): boolean {
  const want = d.spec?.replicas ?? 1;
  const s = d.status ?? {};
  return (
    (s.observedGeneration ?? 0) >= (d.metadata?.generation ?? 0) &&
    (s.updatedReplicas ?? 0) === want &&
    (s.replicas ?? 0) === want &&
    (s.availableReplicas ?? 0) === want
  );
}

/** StatefulSets also need currentRevision = updateRevision: until then old-revision pods remain. */
export function statefulSetRolledOut(s: V1StatefulSet): boolean {
  const want = s.spec?.replicas ?? 1;
  const st = s.status;
  return (
    st !== undefined &&
    (st.observedGeneration ?? 0) >= (s.metadata?.generation ?? 0) &&
    (st.updatedReplicas ?? 0) === want &&
    (st.readyReplicas ?? 0) === want &&
    st.currentRevision === st.updateRevision
  );
}
