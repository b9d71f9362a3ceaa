/**
 * The PostgreSQL workload (a StatefulSet or Deployment): reading its rollout state and the
 * restart record on its pod template, and requesting a rolling restart by writing that record.
 */
import type { AppsV1Api, V1Deployment, V1StatefulSet } from "@kubernetes/client-node";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { PoolPolicySpec } from "../api/schema.js";
import { isConflict, isNotFound } from "../kube/errors.js";
import { describeWorkload, readWorkloadObject } from "../kube/workloads.js";
import { restartWorkloadRef } from "../server/model.js";
import { RequeueError } from "../runtime/controller.js";
import { STALE_RETRY_MS } from "./pass.js";
import { RESTART_ANNOTATION, formatRestartRecord, parseRestartRecord, type RestartRecord } from "./max-connections.js";
import {
  RESTART_HISTORY_ANNOTATION,
  RESTARTS_HELD_ANNOTATION,
  type RestartLimit,
  recentRestarts,
  type WorkloadRef,
} from "./restart-gate.js";
import { type ContainerMemory, containerMemory } from "../server/memory.js";
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
  /** Restarts the operator requested (annotation), and whether restarts are held. */
  restarts: Pick<RestartLimit, "history" | "heldSince">;
  /** As read: every write below is conditional on it (see patchWorkload). */
  resourceVersion?: string;
  /** The PostgreSQL container's memory limit or request (found workloads only). */
  memory?: ContainerMemory;
}

type RestartSpec = NonNullable<PoolPolicySpec["postgres"]["restart"]>;

export async function readWorkload(
  apps: AppsV1Api,
  restart: RestartSpec | undefined,
  policyNamespace: string,
): Promise<WorkloadState> {
  const none = { found: false, rolledOut: false, record: undefined, restarts: { history: [] } };
  if (!restart) return { ...none, configured: false, description: "no workload" };
  const ref = restartWorkloadRef(restart, policyNamespace);
  const { kind } = ref;
  const base = { configured: true, ...ref, description: describeWorkload(ref) };
  try {
    const object = await readWorkloadObject(apps, ref);
    const rolledOut =
      kind === "StatefulSet"
        ? statefulSetRolledOut(object as V1StatefulSet)
        : deploymentRolledOut(object as V1Deployment);
    const record = parseRestartRecord(object.spec?.template.metadata?.annotations?.[RESTART_ANNOTATION]);
    const podSelector = Object.entries(object.spec?.selector.matchLabels ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(",");
    const annotations = object.metadata?.annotations ?? {};
    const restarts = {
      history: parseTimes(annotations[RESTART_HISTORY_ANNOTATION]),
      heldSince: parseTimes(annotations[RESTARTS_HELD_ANNOTATION])[0],
    };
    const resourceVersion = object.metadata?.resourceVersion;
    const replicas = object.spec?.replicas ?? 1;
    const memory = containerMemory(object.spec?.template.spec, base.description);
    return { ...base, found: true, rolledOut, record, replicas, podSelector, restarts, resourceVersion, memory };
  } catch (err) {
    if (isNotFound(err)) return { ...base, ...none };
    throw err;
  }
}

export function workloadRef(workload: WorkloadState): WorkloadRef {
  return { kind: workload.kind ?? "StatefulSet", name: workload.name ?? "", namespace: workload.namespace ?? "" };
}

function parseTimes(text: string | undefined): Date[] {
  return (text ?? "")
    .split(",")
    .map((t) => new Date(t.trim()))
    .filter((d) => !Number.isNaN(d.getTime()));
}

/** The restart history with `now` added: the last hour's entries only, so the annotation stays small. */
function historyWith(workload: WorkloadState, now: Date): string {
  return [...recentRestarts(workload.restarts.history, now), now].map((d) => d.toISOString()).join(",");
}

/**
 * A merge patch on the workload, conditional on the resourceVersion it was read at. Two policies
 * of one server reconciled at once both decide to restart it; the second writer is refused
 * with 409 and comes back to find the restart requested, instead of counting it twice.
 */
async function patchWorkload(
  apps: AppsV1Api,
  workload: WorkloadState,
  body: { metadata: { annotations: Record<string, string> }; spec?: object },
): Promise<void> {
  const conditional = { ...body, metadata: { ...body.metadata, resourceVersion: workload.resourceVersion } };
  const params = { name: workload.name!, namespace: workload.namespace!, body: conditional };
  const options = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
  try {
    if (workload.kind === "StatefulSet") await apps.patchNamespacedStatefulSet(params, options);
    else await apps.patchNamespacedDeployment(params, options);
  } catch (err) {
    if (isConflict(err)) {
      throw new RequeueError(`${workload.description} changed since it was read; deciding again`, STALE_RETRY_MS);
    }
    throw err;
  }
}

/**
 * Writes the restart record into the pod template (the workload controller then rolls every
 * pod) and adds the restart to the history, in one patch: no restart without its count.
 */
export async function requestRestart(
  apps: AppsV1Api,
  workload: WorkloadState,
  record: RestartRecord,
  now: Date,
): Promise<void> {
  await patchWorkload(apps, workload, {
    metadata: { annotations: { [RESTART_HISTORY_ANNOTATION]: historyWith(workload, now) } },
    spec: { template: { metadata: { annotations: { [RESTART_ANNOTATION]: formatRestartRecord(record) } } } },
  });
}

/** Counts a restart that the operator carries out pod by pod (a primary with replicas). */
export async function recordRestart(apps: AppsV1Api, workload: WorkloadState, now: Date): Promise<void> {
  await patchWorkload(apps, workload, {
    metadata: { annotations: { [RESTART_HISTORY_ANNOTATION]: historyWith(workload, now) } },
  });
}

/** The restart limit was reached: restarts of this workload wait until a person removes this. */
export async function holdRestarts(apps: AppsV1Api, workload: WorkloadState, now: Date): Promise<void> {
  await patchWorkload(apps, workload, { metadata: { annotations: { [RESTARTS_HELD_ANNOTATION]: now.toISOString() } } });
}

/** Whether the workload runs several PostgreSQL pods that must restart in topology order. */
export function isReplicationGroup(workload: WorkloadState): boolean {
  return workload.found && workload.kind === "StatefulSet" && (workload.replicas ?? 1) > 1;
}
