/**
 * The PostgreSQL workload (a StatefulSet or Deployment): reading its rollout state and the
 * restart record on its pod template, and requesting a rolling restart by writing that record.
 */
import type { AppsV1Api, V1Deployment, V1StatefulSet } from "@kubernetes/client-node";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { PoolPolicySpec } from "../api/schema.js";
import { isNotFound } from "./kube-errors.js";
import { RESTART_ANNOTATION, formatRestartRecord, parseRestartRecord, type RestartRecord } from "./max-connections.js";
import { deploymentRolledOut, statefulSetRolledOut } from "./rollout.js";

export interface WorkloadState {
  configured: boolean;
  found: boolean;
  rolledOut: boolean;
  record: RestartRecord | undefined;
  description: string;
  kind?: "StatefulSet" | "Deployment";
  name?: string;
  namespace?: string;
  /** Desired pods: more than one PostgreSQL pod in a StatefulSet means a primary and replicas. */
  replicas?: number;
  /** The pods' label selector, for listing them. */
  podSelector?: string;
}

type RestartSpec = NonNullable<PoolPolicySpec["postgres"]["restart"]>;

export async function readWorkload(
  apps: AppsV1Api,
  restart: RestartSpec | undefined,
  policyNamespace: string,
): Promise<WorkloadState> {
  if (!restart)
    return { configured: false, found: false, rolledOut: false, record: undefined, description: "no workload" };
  const { kind, name } = restart.workload;
  const namespace = restart.workload.namespace ?? policyNamespace;
  const base = { configured: true, kind, name, namespace, description: `${kind} ${namespace}/${name}` };
  try {
    const object: V1StatefulSet | V1Deployment =
      kind === "StatefulSet"
        ? await apps.readNamespacedStatefulSet({ name, namespace })
        : await apps.readNamespacedDeployment({ name, namespace });
    const rolledOut =
      kind === "StatefulSet"
        ? statefulSetRolledOut(object as V1StatefulSet)
        : deploymentRolledOut(object as V1Deployment);
    const record = parseRestartRecord(object.spec?.template.metadata?.annotations?.[RESTART_ANNOTATION]);
    const podSelector = Object.entries(object.spec?.selector.matchLabels ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(",");
    return { ...base, found: true, rolledOut, record, replicas: object.spec?.replicas ?? 1, podSelector };
  } catch (err) {
    if (isNotFound(err)) return { ...base, found: false, rolledOut: false, record: undefined };
    throw err;
  }
}

/** Writes the restart record into the pod template: the workload controller then rolls every pod. */
export async function requestRestart(apps: AppsV1Api, workload: WorkloadState, record: RestartRecord): Promise<void> {
  const body = {
    spec: { template: { metadata: { annotations: { [RESTART_ANNOTATION]: formatRestartRecord(record) } } } },
  };
  const params = { name: workload.name!, namespace: workload.namespace!, body };
  const options = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
  if (workload.kind === "StatefulSet") await apps.patchNamespacedStatefulSet(params, options);
  else await apps.patchNamespacedDeployment(params, options);
}

/** Whether the workload runs several PostgreSQL pods that must restart in topology order. */
export function isReplicationGroup(workload: WorkloadState): boolean {
  return workload.found && workload.kind === "StatefulSet" && (workload.replicas ?? 1) > 1;
}
