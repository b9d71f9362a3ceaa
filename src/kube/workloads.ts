/**
 * The workload that runs PostgreSQL (spec.postgres.restart.workload), as the operator and the
 * CLI both read it: one GET, by kind. A StatefulSet or Deployment is restarted by the operator;
 * a CloudNativePG Cluster owns its servers' max_connections and restarts them itself
 * (docs/postgres-operators.md).
 */
import type {
  AppsV1Api,
  CustomObjectsApi,
  V1Deployment,
  V1ResourceRequirements,
  V1StatefulSet,
} from "@kubernetes/client-node";

export interface WorkloadRef {
  kind: "StatefulSet" | "Deployment" | "Cluster";
  name: string;
  namespace: string;
}

/** The parts of a CloudNativePG Cluster (postgresql.cnpg.io/v1) the operator reads. */
export interface CnpgCluster {
  metadata?: { annotations?: Record<string, string>; resourceVersion?: string };
  spec?: {
    instances?: number;
    resources?: V1ResourceRequirements;
    postgresql?: { parameters?: Record<string, string> };
  };
  status?: { phase?: string; phaseReason?: string };
}

export const CNPG = { group: "postgresql.cnpg.io", version: "v1", plural: "clusters" } as const;

/** The phase CloudNativePG reports when every instance runs the current spec. */
export const CNPG_HEALTHY_PHASE = "Cluster in healthy state";

/** How messages name a workload: "StatefulSet db/postgres", "CloudNativePG Cluster db/pg". */
export function describeWorkload(ref: WorkloadRef): string {
  const kind = ref.kind === "Cluster" ? "CloudNativePG Cluster" : ref.kind;
  return `${kind} ${ref.namespace}/${ref.name}`;
}

/** The resource name kubectl needs: "cluster" alone is ambiguous wherever another CRD is called Cluster. */
export function kubectlResource(ref: WorkloadRef): string {
  return ref.kind === "Cluster" ? `${CNPG.plural}.${CNPG.group}` : ref.kind.toLowerCase();
}

export interface WorkloadClients {
  apps: AppsV1Api;
  custom: CustomObjectsApi;
}

export type WorkloadObject =
  | { kind: "StatefulSet"; object: V1StatefulSet }
  | { kind: "Deployment"; object: V1Deployment }
  | { kind: "Cluster"; object: CnpgCluster };

export async function readWorkloadObject(clients: WorkloadClients, ref: WorkloadRef): Promise<WorkloadObject> {
  const { name, namespace } = ref;
  switch (ref.kind) {
    case "StatefulSet":
      return { kind: ref.kind, object: await clients.apps.readNamespacedStatefulSet({ name, namespace }) };
    case "Deployment":
      return { kind: ref.kind, object: await clients.apps.readNamespacedDeployment({ name, namespace }) };
    case "Cluster":
      return {
        kind: ref.kind,
        object: (await clients.custom.getNamespacedCustomObject({ ...CNPG, name, namespace })) as CnpgCluster,
      };
  }
}
