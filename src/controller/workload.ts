/**
 * The PostgreSQL workload: a StatefulSet or Deployment, whose rollout state and pod-template
 * restart record are read here and whose rolling restart is requested by writing that record;
 * or a resource of a Postgres operator (a CloudNativePG Cluster, a Zalando postgresql), which owns
 * max_connections (spec.postgresql.parameters) and restarts its instances itself: there the
 * record and the restart history are annotations of the resource, and the change is one field
 * applied with the operator's own field manager.
 */
import type { V1Deployment, V1StatefulSet } from "@kubernetes/client-node";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { PoolPolicySpec } from "../api/schema.js";
import { isConflict, isNotFound } from "../kube/errors.js";
import {
  describeWorkload,
  isOwnedKind,
  POSTGRES_OPERATORS,
  readWorkloadObject,
  type WorkloadClients,
  type WorkloadObject,
} from "../kube/workloads.js";
import { restartWorkloadRef } from "../server/model.js";
import { RequeueError } from "../runtime/controller.js";
import { conflictingManagers } from "./env-conflicts.js";
import { FIELD_MANAGER_PREFIX } from "./env-injection.js";
import { STALE_RETRY_MS } from "./pass.js";
import {
  type OwnerState,
  RESTART_ANNOTATION,
  formatRestartRecord,
  parseRestartRecord,
  type RestartRecord,
} from "./max-connections.js";
import {
  RESTART_HISTORY_ANNOTATION,
  RESTARTS_HELD_ANNOTATION,
  type RestartLimit,
  recentRestarts,
  type WorkloadRef,
} from "./restart-gate.js";
import { type ContainerMemory, containerMemory, postgresPodSpec } from "../server/memory.js";
import { deploymentRolledOut, statefulSetRolledOut } from "./rollout.js";

/**
 * The field manager of the one field the operator sets on a CloudNativePG Cluster or a Zalando
 * postgresql. One per server, not per policy: the policies of a server agree on one value
 * (server/model.ts).
 */
export const OWNER_FIELD_MANAGER = `${FIELD_MANAGER_PREFIX}/max-connections`;

export interface WorkloadState {
  configured: boolean;
  found: boolean;
  /** Every pod runs the latest template; for an owned resource: its operator reports it healthy. */
  rolledOut: boolean;
  record: RestartRecord | undefined;
  description: string;
  kind?: WorkloadRef["kind"];
  name?: string;
  namespace?: string;
  /** Desired pods: more than one PostgreSQL pod in a StatefulSet means a primary and replicas. */
  replicas?: number;
  /** The pods' label selector, for listing them. */
  podSelector?: string;
  /** Restarts the operator requested (annotation), and whether restarts are held. */
  restarts: Pick<RestartLimit, "history" | "heldSince">;
  /**
   * A StatefulSet whose rolling update names no spec.updateStrategy.rollingUpdate (a manifest that
   * says only `type: RollingUpdate`): requestRestart sets its partition to 0, which changes nothing
   * else (see there why it must).
   */
  partitionUnset?: boolean;
  /** As read: every write below is conditional on it (see patchWorkload). */
  resourceVersion?: string;
  /** The PostgreSQL container's memory limit or request (found workloads only). */
  memory?: ContainerMemory;
  /** A found Cluster or postgresql: what it holds and what its operator reports. */
  owner?: OwnerState;
}

type RestartSpec = NonNullable<PoolPolicySpec["postgres"]["restart"]>;

export async function readWorkload(
  clients: WorkloadClients,
  restart: RestartSpec | undefined,
  policyNamespace: string,
): Promise<WorkloadState> {
  const none = { found: false, rolledOut: false, record: undefined, restarts: { history: [] } };
  if (!restart) return { ...none, configured: false, description: "no workload" };
  const ref = restartWorkloadRef(restart, policyNamespace);
  const base = { configured: true, ...ref, description: describeWorkload(ref) };
  let read: WorkloadObject;
  try {
    read = await readWorkloadObject(clients, ref);
  } catch (err) {
    if (isNotFound(err)) return { ...base, ...none };
    throw err;
  }
  const annotations = read.object.metadata?.annotations ?? {};
  const common = {
    ...base,
    found: true,
    restarts: {
      history: parseTimes(annotations[RESTART_HISTORY_ANNOTATION]),
      heldSince: parseTimes(annotations[RESTARTS_HELD_ANNOTATION])[0],
    },
    resourceVersion: read.object.metadata?.resourceVersion,
    memory: containerMemory(postgresPodSpec(read), base.description),
  };
  if (read.kind === "Cluster" || read.kind === "postgresql") {
    const owner = ownerState(read);
    const record = parseRestartRecord(annotations[RESTART_ANNOTATION]);
    const replicas = read.kind === "Cluster" ? read.object.spec?.instances : read.object.spec?.numberOfInstances;
    return { ...common, rolledOut: owner.phase === owner.operator.healthy, record, replicas, owner };
  }
  const object = read.object;
  const rolledOut =
    read.kind === "StatefulSet"
      ? statefulSetRolledOut(object as V1StatefulSet)
      : deploymentRolledOut(object as V1Deployment);
  const record = parseRestartRecord(object.spec?.template.metadata?.annotations?.[RESTART_ANNOTATION]);
  const podSelector = Object.entries(object.spec?.selector.matchLabels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
  const strategy = read.kind === "StatefulSet" ? (object as V1StatefulSet).spec?.updateStrategy : undefined;
  const partitionUnset = strategy?.type === "RollingUpdate" && strategy.rollingUpdate === undefined;
  return { ...common, rolledOut, record, replicas: object.spec?.replicas ?? 1, podSelector, partitionUnset };
}

function ownerState(read: Extract<WorkloadObject, { kind: "Cluster" | "postgresql" }>): OwnerState {
  const maxConnections = read.object.spec?.postgresql?.parameters?.max_connections;
  const operator = POSTGRES_OPERATORS[read.kind];
  if (read.kind === "postgresql") {
    const phase = read.object.status?.PostgresClusterStatus;
    return { operator, maxConnections, phase, phaseReason: undefined };
  }
  return { operator, maxConnections, phase: read.object.status?.phase, phaseReason: read.object.status?.phaseReason };
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
  clients: WorkloadClients,
  workload: WorkloadState,
  body: { metadata: { annotations: Record<string, string> }; spec?: object },
): Promise<void> {
  const conditional = { ...body, metadata: { ...body.metadata, resourceVersion: workload.resourceVersion } };
  const params = { name: workload.name!, namespace: workload.namespace!, body: conditional };
  const options = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
  try {
    if (workload.kind === "StatefulSet") await clients.apps.patchNamespacedStatefulSet(params, options);
    else if (isOwnedKind(workload.kind)) {
      const { resource } = POSTGRES_OPERATORS[workload.kind];
      await clients.custom.patchNamespacedCustomObject({ ...resource, ...params }, options);
    } else await clients.apps.patchNamespacedDeployment(params, options);
  } catch (err) {
    if (isConflict(err)) {
      throw new RequeueError(`${workload.description} changed since it was read; deciding again`, STALE_RETRY_MS);
    }
    throw err;
  }
}

/**
 * Records a restart request and adds it to the history, in one patch: no restart without its
 * count. A StatefulSet or Deployment: the record goes into the pod template, and that change
 * rolls every pod. A Cluster or postgresql: the record is an annotation of the resource, and the
 * restart follows from setOwnerMaxConnections, which the caller runs right after (a crash in
 * between leaves a record whose value the resource does not hold yet: the next pass sets it).
 */
export async function requestRestart(
  clients: WorkloadClients,
  workload: WorkloadState,
  record: RestartRecord,
  now: Date,
): Promise<void> {
  const history = { [RESTART_HISTORY_ANNOTATION]: historyWith(workload, now) };
  if (isOwnedKind(workload.kind)) {
    await patchWorkload(clients, workload, {
      metadata: { annotations: { ...history, [RESTART_ANNOTATION]: formatRestartRecord(record) } },
    });
    return;
  }
  // Why the partition: with spec.updateStrategy.rollingUpdate unset, the StatefulSet controller
  // (Kubernetes 1.35, newVersionedStatefulSetPod) recreates a pod it deleted for the update at
  // the OLD revision whenever its status.currentReplicas still counts the old pod, then rolls that
  // pod again once it is Ready: PostgreSQL restarts twice for one request. Measured on our control
  // plane, 60 template changes of a one-pod StatefulSet: 11 pods created at the old revision with
  // `type: RollingUpdate` alone, none with `partition: 0` (which means the same: update every pod).
  const updateStrategy = workload.partitionUnset ? { updateStrategy: { rollingUpdate: { partition: 0 } } } : {};
  await patchWorkload(clients, workload, {
    metadata: { annotations: history },
    spec: {
      ...updateStrategy,
      template: { metadata: { annotations: { [RESTART_ANNOTATION]: formatRestartRecord(record) } } },
    },
  });
}

/** Another field manager owns spec.postgresql.parameters.max_connections of the Cluster or postgresql. */
export class OwnerParameterConflict extends Error {
  constructor(
    readonly workload: string,
    readonly managers: string[],
  ) {
    super(
      `field manager ${managers.map((m) => `"${m}"`).join(", ")} owns spec.postgresql.parameters.max_connections of ${workload}, ` +
        "so the operator does not overwrite it: remove max_connections from that manager's manifest of it (the policy sets it), " +
        "or remove spec.postgres.maxConnections from the policy",
    );
  }
}

/**
 * Sets spec.postgresql.parameters.max_connections of a CloudNativePG Cluster or a Zalando
 * postgresql (a string there, in both) by server-side apply with OWNER_FIELD_MANAGER: the apply
 * configuration names that one field, so the manager owns it and nothing else. Not forced: a
 * value someone else manages is theirs (OwnerParameterConflict says whose).
 */
export async function setOwnerMaxConnections(
  clients: WorkloadClients,
  workload: WorkloadState,
  value: number,
): Promise<void> {
  if (!isOwnedKind(workload.kind)) throw new Error(`${workload.description} has no max_connections parameter to set`);
  const { apiVersion, kind, resource } = POSTGRES_OPERATORS[workload.kind];
  const body = {
    apiVersion,
    kind,
    metadata: { name: workload.name!, namespace: workload.namespace! },
    spec: { postgresql: { parameters: { max_connections: String(value) } } },
  };
  const params = {
    ...resource,
    name: workload.name!,
    namespace: workload.namespace!,
    body,
    fieldManager: OWNER_FIELD_MANAGER,
  };
  try {
    await clients.custom.patchNamespacedCustomObject(
      { ...params, force: false },
      setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
    );
  } catch (err) {
    const managers = conflictingManagers(err);
    if (managers) throw new OwnerParameterConflict(workload.description, managers);
    throw err;
  }
}

/** Counts a restart that the operator carries out pod by pod (a primary with replicas). */
export async function recordRestart(clients: WorkloadClients, workload: WorkloadState, now: Date): Promise<void> {
  await patchWorkload(clients, workload, {
    metadata: { annotations: { [RESTART_HISTORY_ANNOTATION]: historyWith(workload, now) } },
  });
}

/** The restart limit was reached: restarts of this workload wait until a person removes this. */
export async function holdRestarts(clients: WorkloadClients, workload: WorkloadState, now: Date): Promise<void> {
  await patchWorkload(clients, workload, {
    metadata: { annotations: { [RESTARTS_HELD_ANNOTATION]: now.toISOString() } },
  });
}

/** Whether the workload runs several PostgreSQL pods that must restart in topology order. */
export function isReplicationGroup(workload: WorkloadState): boolean {
  return workload.found && workload.kind === "StatefulSet" && (workload.replicas ?? 1) > 1;
}
