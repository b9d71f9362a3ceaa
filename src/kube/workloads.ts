/**
 * The workload that runs PostgreSQL (spec.postgres.restart.workload), as the operator and the
 * CLI both read it: one GET, by kind. A StatefulSet or Deployment is restarted by the operator;
 * a CloudNativePG Cluster or a Zalando `postgresql` owns its servers' max_connections and
 * restarts them itself (docs/postgres-operators.md): what differs between those owners (their
 * resource, the status field that says what they are doing, and its value when they are done)
 * is written once, in POSTGRES_OPERATORS.
 */
import type {
  AppsV1Api,
  CustomObjectsApi,
  V1Deployment,
  V1ResourceRequirements,
  V1StatefulSet,
} from "@kubernetes/client-node";

/** The kinds of resource a Postgres operator owns, whose max_connections the operator sets there. */
export type OwnedKind = "Cluster" | "postgresql";

export interface WorkloadRef {
  kind: "StatefulSet" | "Deployment" | OwnedKind;
  name: string;
  namespace: string;
}

/**
 * A Postgres operator whose resource owns a server's max_connections. Both take it, as a string,
 * at spec.postgresql.parameters.max_connections, so the one field the operator applies is the
 * same path on either.
 */
export interface PostgresOperator {
  /** How messages name the operator: "CloudNativePG restarts …". */
  name: string;
  apiVersion: string;
  kind: OwnedKind;
  resource: { group: string; version: string; plural: string };
  /** Where it reports what it is doing ("status.phase"), and the value that means "done, healthy". */
  statusField: string;
  healthy: string;
  /** The chart value that grants the operator get and patch on the resource. */
  chartValue: string;
  /** What else can decide the value after a restart: said when a restart did not bring it. */
  verificationHint: string;
}

export const CNPG = { group: "postgresql.cnpg.io", version: "v1", plural: "clusters" } as const;
export const ZALANDO = { group: "acid.zalan.do", version: "v1", plural: "postgresqls" } as const;

/** The phase CloudNativePG reports when every instance runs the current spec. */
export const CNPG_HEALTHY_PHASE = "Cluster in healthy state";
/**
 * The status Zalando's operator reports once an update or sync went through (its Update sets
 * "Updating", applies the parameters through Patroni and restarts the members whose restart is
 * pending, then sets "Running", or "UpdateFailed"; a failed periodic sync sets "SyncFailed").
 */
export const ZALANDO_RUNNING = "Running";

export const POSTGRES_OPERATORS: Record<OwnedKind, PostgresOperator> = {
  Cluster: {
    name: "CloudNativePG",
    apiVersion: `${CNPG.group}/${CNPG.version}`,
    kind: "Cluster",
    resource: CNPG,
    statusField: "status.phase",
    healthy: CNPG_HEALTHY_PHASE,
    chartValue: "postgresOperators.cloudnativePG.enabled",
    verificationHint: "a value in postgresql.auto.conf overrides the Cluster's parameters",
  },
  postgresql: {
    name: "Zalando's postgres-operator",
    apiVersion: `${ZALANDO.group}/${ZALANDO.version}`,
    kind: "postgresql",
    resource: ZALANDO,
    statusField: "status.PostgresClusterStatus",
    healthy: ZALANDO_RUNNING,
    chartValue: "postgresOperators.zalando.enabled",
    verificationHint:
      "Patroni passes the value on the postgres command line; `patronictl show-config` shows what it holds",
  },
};

export function isOwnedKind(kind: WorkloadRef["kind"] | undefined): kind is OwnedKind {
  return kind === "Cluster" || kind === "postgresql";
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

/** The parts of a Zalando `postgresql` (acid.zalan.do/v1) the operator reads. */
export interface ZalandoPostgresql {
  metadata?: { annotations?: Record<string, string>; resourceVersion?: string };
  spec?: {
    numberOfInstances?: number;
    /** Applied to the "postgres" container of its pods (requests and limits of cpu and memory). */
    resources?: V1ResourceRequirements;
    postgresql?: { version?: string; parameters?: Record<string, string> };
  };
  /** Its CRD types status as a map of strings; the operator writes only this key. */
  status?: { PostgresClusterStatus?: string };
}

/** How messages name a workload: "StatefulSet db/postgres", "CloudNativePG Cluster db/pg", "Zalando postgresql db/pg". */
export function describeWorkload(ref: WorkloadRef): string {
  const kind =
    ref.kind === "Cluster" ? "CloudNativePG Cluster" : ref.kind === "postgresql" ? "Zalando postgresql" : ref.kind;
  return `${kind} ${ref.namespace}/${ref.name}`;
}

/** The resource name kubectl needs: "cluster" alone is ambiguous wherever another CRD is called Cluster. */
export function kubectlResource(ref: WorkloadRef): string {
  if (!isOwnedKind(ref.kind)) return ref.kind.toLowerCase();
  const { plural, group } = POSTGRES_OPERATORS[ref.kind].resource;
  return `${plural}.${group}`;
}

export interface WorkloadClients {
  apps: AppsV1Api;
  custom: CustomObjectsApi;
}

export type WorkloadObject =
  | { kind: "StatefulSet"; object: V1StatefulSet }
  | { kind: "Deployment"; object: V1Deployment }
  | { kind: "Cluster"; object: CnpgCluster }
  | { kind: "postgresql"; object: ZalandoPostgresql };

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
    case "postgresql":
      return {
        kind: ref.kind,
        object: (await clients.custom.getNamespacedCustomObject({ ...ZALANDO, name, namespace })) as ZalandoPostgresql,
      };
  }
}
