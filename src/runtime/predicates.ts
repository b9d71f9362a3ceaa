/**
 * Which watch events are worth a reconcile.
 *
 * Why: every status write of ours comes back as a watch event. Reconciling on it redoes the whole
 * pass (and, because policies of one server depend on each other, the passes of every other
 * policy of that server) only to find nothing to do. Under a burst of spec edits that doubled the
 * work and let the queue grow (the event-storm benchmark, docs/benchmarks.md). Like
 * controller-runtime's GenerationChangedPredicate, an update counts only when the spec changed
 * (metadata.generation) or the metadata the reconciler reads did: labels, annotations (manual
 * approval lives there), finalizers and the deletion timestamp.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import { isDeepStrictEqual } from "node:util";

export function changesWhatReconcileReads(before: KubernetesObject, after: KubernetesObject): boolean {
  const a = before.metadata ?? {};
  const b = after.metadata ?? {};
  return (
    a.generation !== b.generation ||
    String(a.deletionTimestamp ?? "") !== String(b.deletionTimestamp ?? "") ||
    !isDeepStrictEqual(a.labels ?? {}, b.labels ?? {}) ||
    !isDeepStrictEqual(a.annotations ?? {}, b.annotations ?? {}) ||
    !isDeepStrictEqual(a.finalizers ?? [], b.finalizers ?? [])
  );
}
