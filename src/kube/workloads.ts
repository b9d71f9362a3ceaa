/**
 * The workload that runs PostgreSQL (spec.postgres.restart.workload), as the operator and the
 * CLI both read it: one GET, by kind.
 */
import type { AppsV1Api, V1Deployment, V1StatefulSet } from "@kubernetes/client-node";

export interface WorkloadRef {
  kind: "StatefulSet" | "Deployment";
  name: string;
  namespace: string;
}

/** How messages name a workload: "StatefulSet db/postgres". */
export function describeWorkload(ref: WorkloadRef): string {
  return `${ref.kind} ${ref.namespace}/${ref.name}`;
}

export function readWorkloadObject(apps: AppsV1Api, ref: WorkloadRef): Promise<V1StatefulSet | V1Deployment> {
  const { name, namespace } = ref;
  return ref.kind === "StatefulSet"
    ? apps.readNamespacedStatefulSet({ name, namespace })
    : apps.readNamespacedDeployment({ name, namespace });
}
