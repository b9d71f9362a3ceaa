/**
 * The shape of `poolpolicy diagnose`: what was found (facts) and what is wrong with it
 * (findings). The --json output is this object as is, so its field names are an interface
 * scripts rely on: add fields, do not rename them.
 */
import type { ConnectionCounts } from "../postgres/inspect.js";
import type { TargetDemand } from "../budget/budget.js";
import type { RoleLimitPlan } from "../server/role-limits.js";
import type { IdleInTransactionSession, SessionGroup } from "./sessions.js";

export type Severity = "critical" | "warning" | "notice";

/** critical and warning findings make the exit code 1; notices are for reading only. */
export interface Finding {
  severity: Severity;
  /** Stable identifier for scripts, e.g. "BudgetExceeded". */
  code: string;
  message: string;
  /** What to do, with the numbers. */
  recommendation?: string;
}

export interface Subject {
  /** "ns/name" when a PoolPolicy was diagnosed. */
  policy?: string;
  /** The --dsn, password redacted. */
  dsn?: string;
  /** host:port as connected to. */
  server: string;
  database: string;
  user: string;
}

export type PostgresSection =
  | {
      reachable: true;
      version: string;
      maxConnections: number;
      settingSource: string;
      pendingRestart: boolean;
      /** What postgresql.auto.conf holds (the value the next start uses), when readable. */
      alterSystemValue?: number;
      postmasterStartTime: string;
      superuserReservedConnections: number;
      reservedConnections: number;
      isSuperuser: boolean;
      connections: ConnectionCounts;
      /** connections.total / max_connections, in percent, rounded. */
      usagePercent: number;
      /** Slots left for roles without a reserved slot; at 0 they get "too many clients". */
      ordinarySlotsFree: number;
    }
  | { reachable: false; reason: string; message: string };

export interface SessionsSection {
  byDatabase: (Omit<SessionGroup, "database" | "user" | "applicationName"> & { database: string })[];
  byUserAndApplication: SessionGroup[];
  oldestIdleInTransaction: IdleInTransactionSession[];
  /** The age past which a session idle in transaction is a problem: the policy's reaper timeout, or --idle-threshold. */
  idleThreshold: string;
  idleThresholdMs: number;
  /** Sessions idle in transaction longer than the threshold, all databases. */
  idleInTransactionOverThreshold: number;
}

export interface BudgetSection {
  server: string;
  policies: string[];
  targets: TargetDemand[];
  reserve: { superuserReserved: number; reserved: number; operator: number; extra: number; total: number };
  demand: number;
  capacity: number;
  withinLimits: boolean;
  /** The server's settings (serverSettings in src/server/model.ts), used to size the recommended max_connections. */
  headroomPercent: number;
  ceiling: number;
  /** The memory ceiling (src/server/memory.ts), as the operator computes it; absent in reports of older versions. */
  memory?: MemorySection;
  /** The server's pooler (docs/pooler.md), as the operator sizes it; absent when no policy of the server takes part in one. */
  pooler?: PoolerSection;
  notes: string[];
}

/**
 * The server's PgBouncer as the operator sizes it (planDeclaredPooler in src/server/pooler.ts):
 * `pooled` are the policies whose apps go through it (spec.pool.via Pooler).
 */
export type PoolerSection = { pooled: string[] } & (
  | {
      state: "sized";
      /** "namespace/name" */
      name: string;
      /** Worst-case PgBouncer pods (replicas + surge). */
      pods: number;
      /** Server connections per pod, over all its databases. */
      perPod: number;
      /** What is left of max_connections for the pooler: max_connections − reserved − direct. */
      left: number;
      maxClientConn: number;
      /** The operator's words for the sizes (explainSizing). */
      explanation: string;
    }
  | { state: "refused"; name: string; message: string }
  | { state: "notDeclared" | "conflict"; message: string }
);

/** What the PostgreSQL container's memory carries, and the operator's MemoryWithinLimits verdict on max_connections. */
export type MemorySection = (
  | {
      known: true;
      /** The largest max_connections that fits. */
      ceiling: number;
      /** e.g. "the memory limit 2 GiB of container postgres in StatefulSet db/pg" */
      source: string;
      memoryBytes: number;
      /** shared_buffers + autovacuum workers + the server's own processes */
      fixedBytes: number;
      /** spec.postgres.memory.perConnection (or the default) + work_mem */
      perConnectionBytes: number;
    }
  | { known: false; reason: string; message: string }
) & { condition: { status: string; reason: string; message: string } };

/**
 * A role some policy of the server holds to its share (spec.enforcement.connectionLimit): the
 * share as the operator computes it (src/server/role-limits.ts) against the role as PostgreSQL
 * has it now (src/postgres/roles.ts).
 */
export interface RoleSection {
  role: string;
  share: {
    /** Worst-case connections of the targets of the policies naming the role. */
    demand: number;
    /** Σ of their spec.enforcement.connectionLimit.margin. */
    margin: number;
    /** demand + margin: the CONNECTION LIMIT the role should have. */
    limit: number;
    /** "ns/name" of the policies naming the role. */
    policies: string[];
  };
  exists: boolean;
  superuser: boolean;
  /** The policy's own login (spec.postgres.credentialsSecret): the operator never limits it. */
  operatorRole: boolean;
  /** rolconnlimit as read: -1 means no limit. */
  connectionLimit: number;
  /** Sessions of the role now, every database counted (what PostgreSQL holds against the limit). */
  connections: number;
  /** What the operator does about the limit: keep it, change it (and in which order), or refuse the role. */
  plan: RoleLimitPlan;
}

export interface ExtensionsSection {
  database: string;
  required: string[];
  missing: { name: string; availableOnServer: boolean }[];
}

export interface RedisSection {
  required: boolean;
  available: boolean;
  /** The condition reason the operator would report: Available, NearClientLimit, RedisUnavailable, SecretNotFound… */
  reason: string;
  message: string;
  connectedClients?: number;
  maxClients?: number;
  rejectedConnections?: number;
}

export interface PolicySection {
  maxConnections?: number | "auto";
  /** spec.postgres.restart.workload as messages name it, e.g. "CloudNativePG Cluster db/pg". */
  restartWorkload?: string;
  /** That workload is a resource whose operator restarts the server: its name ("CloudNativePG"). */
  restartedBy?: string;
  pool: { minSize: number; maxSize: number };
  reaper: { enabled: boolean; dryRun: boolean; idleInTransactionTimeout: string };
  /** The conditions the operator last wrote. */
  conditions: { type: string; status: string; reason: string; message: string }[];
}

export interface DiagnoseReport {
  subject: Subject;
  policy?: PolicySection;
  postgres: PostgresSection;
  sessions?: SessionsSection;
  budget?: BudgetSection;
  /** The enforced roles of the server, by name; absent without a budget (--dsn, server unreachable). */
  roles?: RoleSection[];
  extensions?: ExtensionsSection;
  redis?: RedisSection;
  findings: Finding[];
  /** false when any finding is critical or a warning: the exit code is then 1. */
  ok: boolean;
}
