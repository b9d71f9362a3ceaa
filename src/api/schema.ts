/**
 * The PoolPolicy API (pooling.dbops.io/v1alpha1): the one source of truth for its shape.
 *
 * The zod schemas below validate objects in the operator, give the TypeScript types, and are
 * turned into the CRD's OpenAPI schema by ./crd.ts (see tools/generate-crd.ts). Rules the
 * apiserver can enforce at admission are written twice on purpose, in two languages of the
 * same rule: as zod refinements (so the operator never acts on an object that slipped past an
 * old CRD) and as CEL `x-kubernetes-validations` next to them (so `kubectl apply` rejects the
 * object with a readable message). test/unit/api tests that each CEL rule's zod twin agrees.
 */
import type { V1ObjectMeta } from "@kubernetes/client-node";
import { z } from "zod";
import { DURATION_PATTERN, parseDuration } from "./duration.js";
import { parseMemoryQuantity } from "./quantity.js";

export const GROUP = "pooling.dbops.io";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = "PoolPolicy";
export const PLURAL = "poolpolicies";

/** PostgreSQL's own bounds for max_connections. */
export const MAX_CONNECTIONS_MIN = 1;
export const MAX_CONNECTIONS_MAX = 262143;

type CelRule = { rule: string; message: string; fieldPath?: string; reason?: string };
/** CloudNativePG's Cluster (docs/postgres-operators.md): it owns max_connections of the servers it runs. */
export const CNPG_API_VERSION = "postgresql.cnpg.io/v1";
/** Zalando's postgres-operator's `postgresql` (docs/postgres-operators.md): the same, through Patroni. */
export const ZALANDO_API_VERSION = "acid.zalan.do/v1";

/**
 * "Cluster" alone names a dozen CRDs, "postgresql" more than one: the apiVersion says whose,
 * and each owned kind goes with its owner's apiVersion only.
 */
const OWNED_KINDS = [
  { kind: "Cluster", apiVersion: CNPG_API_VERSION, owner: "CloudNativePG" },
  { kind: "postgresql", apiVersion: ZALANDO_API_VERSION, owner: "Zalando's postgres-operator" },
] as const;
const pairingMessage = (o: (typeof OWNED_KINDS)[number]) =>
  `kind ${o.kind} goes with apiVersion ${o.apiVersion} (${o.owner}), and only it`;

const cel = (...rules: CelRule[]) => ({ "x-kubernetes-validations": rules });

const name = (max = 253) => z.string().min(1).max(max);
const envVarName = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a valid environment variable name");

const ENV_NAMES_DISTINCT = "env.min, env.max, env.host and env.port must name four different variables";

const duration = (minimum: string) =>
  z
    .string()
    .max(32)
    .regex(new RegExp(DURATION_PATTERN), "must be a duration such as 90s, 5m or 1h30m")
    .refine((d) => (parseDuration(d) ?? 0) >= parseDuration(minimum)!, `must be at least ${minimum}`)
    .meta(cel({ rule: `duration(self) >= duration('${minimum}')`, message: `must be at least ${minimum}` }));

const maxConnections = z.union([z.int().min(MAX_CONNECTIONS_MIN).max(MAX_CONNECTIONS_MAX), z.literal("auto")]).meta({
  description: `max_connections for the server: an integer from ${MAX_CONNECTIONS_MIN} to ${MAX_CONNECTIONS_MAX}, or "auto" to size it from the connection budget. Absent: the operator does not manage it.`,
  "x-kubernetes-int-or-string": true,
  ...cel({
    rule: `type(self) == int ? (self >= ${MAX_CONNECTIONS_MIN} && self <= ${MAX_CONNECTIONS_MAX}) : self == 'auto'`,
    message: `maxConnections must be an integer from ${MAX_CONNECTIONS_MIN} to ${MAX_CONNECTIONS_MAX}, or "auto"`,
  }),
});

const weekday = z.enum(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]);

const maintenanceWindow = z
  .object({
    days: z.array(weekday).min(1).max(7).meta({ "x-kubernetes-list-type": "set" }),
    start: z
      .string()
      .max(5)
      .regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/, "must be HH:MM (24h)")
      .describe("Start of the window, HH:MM in timeZone."),
    duration: duration("1m").describe("Length of the window, e.g. 2h."),
    timeZone: z
      .string()
      .max(64)
      .default("UTC")
      .refine((tz) => isTimeZone(tz), "must be an IANA time zone such as UTC or Europe/Berlin")
      .describe("IANA time zone of start."),
  })
  .describe("Restarts happen only inside this window.");

const restart = z
  .object({
    workload: z
      .object({
        apiVersion: z
          .enum(["apps/v1", CNPG_API_VERSION, ZALANDO_API_VERSION])
          .optional()
          .describe(
            `apps/v1 (the default) for a StatefulSet or Deployment; ${CNPG_API_VERSION} for a CloudNativePG Cluster; ${ZALANDO_API_VERSION} for a Zalando postgresql.`,
          ),
        kind: z.enum(["StatefulSet", "Deployment", "Cluster", "postgresql"]).default("StatefulSet"),
        name: name(),
        namespace: name(63).optional().describe("Defaults to the PoolPolicy's namespace."),
      })
      .refine((w) => (w.kind === OWNED_KINDS[0].kind) === (w.apiVersion === OWNED_KINDS[0].apiVersion), {
        message: pairingMessage(OWNED_KINDS[0]),
        path: ["apiVersion"],
      })
      .refine((w) => (w.kind === OWNED_KINDS[1].kind) === (w.apiVersion === OWNED_KINDS[1].apiVersion), {
        message: pairingMessage(OWNED_KINDS[1]),
        path: ["apiVersion"],
      })
      .meta(
        cel(
          ...OWNED_KINDS.map((o) => ({
            rule: `(self.kind == '${o.kind}') == (has(self.apiVersion) && self.apiVersion == '${o.apiVersion}')`,
            message: pairingMessage(o),
            fieldPath: ".apiVersion",
          })),
        ),
      )
      .describe(
        "The resource that runs PostgreSQL. A StatefulSet or Deployment: the operator runs ALTER SYSTEM and restarts its pods through the pod template. " +
          "A CloudNativePG Cluster or a Zalando postgresql: the operator sets spec.postgresql.parameters.max_connections on it and that operator restarts the instances.",
      ),
    policy: z
      .enum(["Automatic", "Manual"])
      .default("Automatic")
      .describe(`Manual: wait until the annotation ${GROUP}/approve-restart is set to the desired max_connections.`),
    maintenanceWindow: maintenanceWindow.optional(),
    delayBetweenPods: duration("0s")
      .default("10s")
      .describe(
        "With several PostgreSQL pods (a primary and replicas), the pause after one pod is verified before the next restarts.",
      ),
  })
  .describe("How to restart PostgreSQL after max_connections changed (it needs a postmaster restart).");

/** A memory size for spec fields: a subset of Kubernetes quantities that both zod and CEL read the same. */
// [.] rather than \. : the pattern is also a CEL string literal, where "\." is not a valid escape.
const MEMORY_PATTERN = "^[0-9]+([.][0-9]+)?(Ki|Mi|Gi|k|M|G)?$";
const memorySize = (minimum: string, maximum: string) =>
  z
    .string()
    .max(32)
    .regex(new RegExp(MEMORY_PATTERN), "must be a memory size such as 4Mi, 2.5Mi or 9M")
    .refine((q) => {
      const bytes = parseMemoryQuantity(q)!;
      return bytes >= parseMemoryQuantity(minimum)! && bytes <= parseMemoryQuantity(maximum)!;
    }, `must be from ${minimum} to ${maximum}`)
    .meta(
      cel({
        // The pattern guard keeps quantity() from failing on text the `pattern` already refuses.
        rule: `!self.matches('${MEMORY_PATTERN}') || (quantity(self).compareTo(quantity('${minimum}')) >= 0 && quantity(self).compareTo(quantity('${maximum}')) <= 0)`,
        message: `must be from ${minimum} to ${maximum}`,
      }),
    );

const memory = z
  .object({
    perConnection: memorySize("256Ki", "1Gi")
      .optional()
      .describe(
        "What one connection costs besides work_mem (default: the measured cost, see docs/operations.md). With several policies on one server the largest counts.",
      ),
  })
  .describe(
    "How max_connections is held to what the PostgreSQL container's memory carries (its limit, else its request, read from spec.postgres.restart.workload).",
  );

const postgres = z.object({
  host: z.string().min(1).max(253).describe("Host name or address of the PostgreSQL server (its primary)."),
  port: z.int().min(1).max(65535).default(5432),
  database: z
    .string()
    .min(1)
    .max(63)
    .default("postgres")
    .describe("The database whose sessions are counted and reaped."),
  sslMode: z.enum(["disable", "prefer", "require", "verify-ca", "verify-full"]).default("prefer"),
  credentialsSecret: z
    .object({
      name: name(),
      usernameKey: name().default("username"),
      passwordKey: name().default("password"),
    })
    .describe("A Secret in the PoolPolicy's namespace with the operator's database login."),
  maxConnections: maxConnections.optional(),
  requiredExtensions: z.array(z.string().min(1).max(63)).max(32).default([]).meta({ "x-kubernetes-list-type": "set" }),
  restart: restart.optional(),
  memory: memory.optional(),
});

const pool = z
  .object({
    minSize: z.int().min(0).max(10000).default(5),
    maxSize: z.int().min(1).max(10000).default(25),
    env: z
      .object({
        min: envVarName.default("DB_POSTGRES_MIN_CONN"),
        max: envVarName.default("DB_POSTGRES_MAX_CONN"),
        host: envVarName
          .default("DB_POSTGRES_HOST")
          .describe("Set (with port) only when via is Pooler and the pooler runs: its Service's host name."),
        port: envVarName
          .default("DB_POSTGRES_PORT")
          .describe("Set (with host) only when via is Pooler: the pooler's port."),
      })
      .prefault({})
      .refine((e) => new Set([e.min, e.max, e.host, e.port]).size === 4, ENV_NAMES_DISTINCT)
      .meta(
        cel({
          rule:
            "self.min != self.max && self.min != self.host && self.min != self.port && " +
            "self.max != self.host && self.max != self.port && self.host != self.port",
          message: ENV_NAMES_DISTINCT,
        }),
      ),
    via: z
      .enum(["Direct", "Pooler"])
      .default("Direct")
      .describe(
        "Direct: the apps connect to the server (spec.postgres.host). Pooler: they go through the PgBouncer that a policy of the same server declares in spec.pooler; docs/pooler.md says what the operator does with it so far.",
      ),
  })
  .refine((p) => p.minSize <= p.maxSize, { message: "minSize must not exceed maxSize", path: ["minSize"] })
  .meta(
    cel({ rule: "self.minSize <= self.maxSize", message: "minSize must not exceed maxSize", fieldPath: ".minSize" }),
  )
  .describe("The per-pod connection pool the apps are told to use, through environment variables.");

const labelSelectorRequirement = z
  .object({
    key: z.string().min(1).max(317),
    operator: z.enum(["In", "NotIn", "Exists", "DoesNotExist"]),
    values: z.array(z.string().max(63)).max(64).optional(),
  })
  .refine(
    (r) =>
      r.operator === "In" || r.operator === "NotIn" ? (r.values ?? []).length > 0 : (r.values ?? []).length === 0,
    {
      message: "In and NotIn need values; Exists and DoesNotExist take none",
      path: ["values"],
    },
  )
  .meta(
    cel({
      rule: "(self.operator == 'In' || self.operator == 'NotIn') ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
      message: "In and NotIn need values; Exists and DoesNotExist take none",
    }),
  );

const targets = z.object({
  selector: z
    .object({
      matchLabels: z.record(z.string().max(317), z.string().max(63)).optional(),
      matchExpressions: z.array(labelSelectorRequirement).max(32).optional(),
    })
    .refine(
      (s) => Object.keys(s.matchLabels ?? {}).length + (s.matchExpressions ?? []).length > 0,
      "selector must not be empty: it would select every Deployment of the namespace",
    )
    .meta(
      cel({
        rule: "(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",
        message: "selector must not be empty: it would select every Deployment of the namespace",
      }),
    )
    .describe("Deployments of the PoolPolicy's namespace whose labels match get the pool env."),
  containers: z
    .array(name(63))
    .max(32)
    .default([])
    .describe("Containers to inject into; empty means every container.")
    .meta({ "x-kubernetes-list-type": "set" }),
});

const serverTimeout = z
  .object({
    scope: z
      .enum(["Server", "Roles"])
      .default("Server")
      .describe("Server: ALTER SYSTEM for every session; Roles: ALTER ROLE … SET for the listed roles."),
    roles: z.array(z.string().min(1).max(63)).max(64).default([]).meta({ "x-kubernetes-list-type": "set" }),
  })
  .refine((t) => t.scope === "Server" || t.roles.length > 0, {
    message: "scope Roles needs at least one role",
    path: ["roles"],
  })
  .meta(
    cel({
      rule: "self.scope == 'Server' || size(self.roles) > 0",
      message: "scope Roles needs at least one role",
      fieldPath: ".roles",
    }),
  );

const reaper = z
  .object({
    enabled: z.boolean().default(true),
    mode: z
      .enum(["Terminate", "ServerTimeout", "Both"])
      .default("Terminate")
      .describe(
        "Terminate: the operator's own pass every interval. ServerTimeout: set idle_in_transaction_session_timeout on the server and let PostgreSQL end such sessions itself. Both: the two together.",
      ),
    serverTimeout: serverTimeout.prefault({}),
    interval: duration("5s").default("60s"),
    idleInTransactionTimeout: duration("1s").default("5m"),
    excludeUsers: z.array(z.string().min(1).max(63)).max(64).default([]).meta({ "x-kubernetes-list-type": "set" }),
    excludeApplicationNames: z
      .array(z.string().min(1).max(64))
      .max(64)
      .default([])
      .meta({ "x-kubernetes-list-type": "set" }),
    dryRun: z.boolean().default(false).describe("Report the sessions that would be terminated, terminate none."),
  })
  .describe('Terminates sessions left "idle in transaction" longer than idleInTransactionTimeout.');

const redis = z.object({
  urlSecret: z.object({ name: name(), key: name().default("url") }).describe("A Secret holding a redis:// URL."),
  required: z.boolean().default(false).describe("When true, Redis being unavailable makes the policy not Ready."),
});

const budget = z
  .object({
    reserve: z
      .int()
      .min(0)
      .max(10000)
      .default(0)
      .describe("Connections kept for monitoring, backups and replication on top of the server's reserved slots."),
    headroomPercent: z
      .int()
      .min(0)
      .max(1000)
      .default(20)
      .describe('With maxConnections: "auto", room above the worst-case demand.'),
    ceiling: z
      .int()
      .min(MAX_CONNECTIONS_MIN)
      .max(MAX_CONNECTIONS_MAX)
      .default(1000)
      .describe('With maxConnections: "auto", never size max_connections above this.'),
  })
  .describe(
    "The connection budget of the server: Σ pool max × worst-case pods of every policy pointing at it, plus reserves.",
  );

/** PostgreSQL truncates identifiers to NAMEDATALEN − 1 = 63 bytes: a longer name would name another role. */
const ROLE_NAME_MAX_BYTES = 63;

const connectionLimit = z
  .object({
    role: z
      .string()
      .min(1)
      .max(ROLE_NAME_MAX_BYTES)
      .refine((r) => Buffer.byteLength(r, "utf8") <= ROLE_NAME_MAX_BYTES, "must be at most 63 bytes (UTF-8)")
      .refine((r) => !r.includes("\u0000"), "must not contain NUL")
      .describe("The PostgreSQL role the apps of this policy log in as, exactly as stored (case matters)."),
    margin: z
      .int()
      .min(0)
      .max(10000)
      .default(2)
      .describe("Connections on top of the worst-case demand: a console session, a migration job."),
  })
  .describe(
    "ALTER ROLE <role> CONNECTION LIMIT n, n = the worst-case demand of every policy of the server that names the role (pool max × worst-case pods, HPA and surge included) plus their margins. Raised before pools grow, lowered after the apps rolled out; the limit found before is restored when no policy names the role any more.",
  );

const enforcement = z
  .object({ connectionLimit: connectionLimit.optional() })
  .describe("Turns the budget into limits PostgreSQL itself enforces (opt-in).");

/**
 * A PgBouncer for the server (issue 17), declared on one policy and shared by every policy of
 * the same server whose spec.pool.via is Pooler.
 *
 * Why per server and declared on a policy, rather than on every policy: PgBouncer's point is to
 * fold many apps' clients onto few server connections, and its server share is what is left of
 * the server's max_connections after the direct apps and the reserved slots, a figure of the
 * server, not of one app. One pooler per app would split that rest into thin slices and let the
 * sum of poolers drift from the server again, which is the incident this exists to prevent. No
 * new kind: a policy already names its server, and the server's other settings (the restart
 * workload, maxConnections) are declared the same way; policies that declare a pooler for the
 * same server must declare the same one, or none is run (server/pooler.ts: PoolerConflict).
 */
const POOLER_NAME_PATTERN = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const pooler = z
  .object({
    name: z
      .string()
      .min(1)
      .max(63)
      .regex(
        POOLER_NAME_PATTERN,
        "must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter)",
      )
      .describe("Name of the pooler's Deployment, Service and ConfigMap, in this policy's namespace."),
    image: z
      .string()
      .min(1)
      .max(512)
      .describe(
        "A PgBouncer image (PgBouncer 1.18 or newer) with `pgbouncer` on its PATH and a POSIX shell at /bin/sh: the pod runs a watcher that reloads PgBouncer when its files change.",
      ),
    replicas: z.int().min(1).max(100).default(1),
    maxSurge: z
      .int()
      .min(0)
      .max(100)
      .default(1)
      .describe("Pods the pooler's rollout may add: each holds its own server connections, so they count."),
    port: z.int().min(1).max(65535).default(5432).describe("The port of the pooler's Service."),
    poolMode: z
      .enum(["Session", "Transaction"])
      .default("Session")
      .describe(
        "Session (default, safe): a client keeps one server connection until it disconnects; everything works as direct. " +
          "Transaction: a server connection per transaction; far fewer server connections, but session state does not survive " +
          "a transaction: SET, advisory locks, LISTEN, WITH HOLD cursors, and prepared statements before PgBouncer 1.21. See docs/pooler.md.",
      ),
    minServerConnectionsPerPod: z
      .int()
      .min(1)
      .max(10000)
      .default(2)
      .describe(
        "The least server connections per pod (and database) worth running; with less left on the server the pooler is refused (PoolerDoesNotFit).",
      ),
    reservePoolSize: z
      .int()
      .min(0)
      .max(10000)
      .default(0)
      .describe(
        "PgBouncer's reserve_pool_size: taken out of the pod's share (never added to it), used when clients wait longer than reserve_pool_timeout.",
      ),
  })
  .describe(
    "A PgBouncer for the policies of this server whose spec.pool.via is Pooler, sized from the server's budget. The operator applies its Deployment, Service, ConfigMap and Secret, owned by this policy (deleting the policy deletes them); docs/pooler.md says what exists.",
  );

export const poolPolicySpecSchema = z.object({
  postgres,
  budget: budget.prefault({}),
  pool: pool.prefault({}),
  targets,
  reaper: reaper.prefault({}),
  redis: redis.optional(),
  enforcement: enforcement.optional(),
  pooler: pooler.optional(),
});

// ---------------------------------------------------------------------------------------------
// Status: written by the operator only.

export const conditionSchema = z.object({
  type: z.string().max(316),
  status: z.enum(["True", "False", "Unknown"]),
  reason: z.string().max(1024),
  message: z.string().max(32768),
  lastTransitionTime: z.string(),
  observedGeneration: z.int().min(0).optional(),
});

const envConflict = z
  .object({
    manager: z.string().describe("The other field manager that set the entries (managedFields name)."),
    theirs: z.string().describe('What it set, e.g. "DB_POSTGRES_MAX_CONN=50".'),
    ours: z.string().describe('What this policy wants, e.g. "DB_POSTGRES_MAX_CONN=25".'),
    takes: z.int().describe("How often the operator took the entries back in this round."),
    since: z.string().describe("When the round's first take happened."),
    last: z.string().describe("When the latest take happened."),
    yieldedUntil: z
      .string()
      .optional()
      .describe(
        "Set while the operator leaves the other manager's value in place: when it takes the entries back once more.",
      ),
  })
  .describe("Another field manager keeps setting the pool env this policy owns (ConflictingManager).");

const targetStatus = z.object({
  name: z.string(),
  containers: z.array(z.string()).optional(),
  injected: z.boolean(),
  rolledOut: z.boolean(),
  conflict: envConflict.optional(),
});

export const poolPolicyStatusSchema = z.object({
  observedGeneration: z.int().optional(),
  conditions: z
    .array(conditionSchema)
    .optional()
    .meta({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] }),
  postgres: z
    .object({
      version: z.string().optional(),
      maxConnections: z.int().optional(),
      pendingRestart: z.boolean().optional(),
      settingSource: z.string().optional(),
      postmasterStartTime: z.string().optional(),
      connections: z.object({ total: z.int(), active: z.int(), idle: z.int(), idleInTransaction: z.int() }).optional(),
      usagePercent: z.int().optional(),
      usage: z.string().optional().describe('In use / max_connections, e.g. "37/200 (18%)".'),
    })
    .optional(),
  budget: z
    .object({
      demand: z.int(),
      capacity: z.int(),
      reserve: z.int(),
      policies: z.int().optional().describe("PoolPolicies that point at this server and share its budget."),
      memoryCeiling: z
        .int()
        .optional()
        .describe("The largest max_connections the PostgreSQL container's memory carries, when its limit is known."),
      targets: z
        .array(
          z.object({
            policy: z.string(),
            deployment: z.string(),
            poolMax: z.int(),
            podsWorstCase: z.int(),
            connections: z.int(),
          }),
        )
        .optional(),
    })
    .optional(),
  targets: z.array(targetStatus).optional(),
  connectionLimit: z
    .object({
      role: z.string(),
      limit: z.int().describe("The CONNECTION LIMIT the role should have: demand plus margins."),
      demand: z.int().describe("The worst-case demand of every policy of the server naming the role."),
      policies: z.int().describe("Policies of the server that name the role."),
      current: z.int().optional().describe("rolconnlimit as last read (-1: no limit)."),
      connections: z.int().optional().describe("Sessions of the role as last read (pg_stat_activity)."),
      before: z
        .int()
        .optional()
        .describe("The limit found before any policy set one; restored when none names the role."),
    })
    .optional(),
  targetsSummary: z.string().optional().describe('Injected and rolled-out targets, e.g. "2/3".'),
  reaper: z
    .object({
      lastTerminationTime: z.string().optional(),
      lastTerminated: z.int().optional(),
      totalTerminated: z.int().optional(),
      lastDryRunCandidates: z.int().optional(),
    })
    .optional(),
  pooler: z
    .object({
      name: z
        .string()
        .describe("spec.pooler.name when it was applied: its ConfigMap, Secret (<name>-auth), Deployment and Service."),
    })
    .optional()
    .describe(
      "The pooler this policy's pass applied, in its namespace: deleted (the objects this policy owns) once spec.pooler no longer declares it.",
    ),
  redis: z
    .object({
      connectedClients: z.int().optional(),
      maxClients: z.int().optional(),
      rejectedConnections: z.int().optional(),
    })
    .optional(),
});

export type PoolPolicySpec = z.output<typeof poolPolicySpecSchema>;
export type PoolPolicySpecInput = z.input<typeof poolPolicySpecSchema>;
export type PoolPolicyStatus = z.output<typeof poolPolicyStatusSchema>;
export type Condition = z.output<typeof conditionSchema>;

/**
 * A PoolPolicy as the API returns it. Custom objects arrive as plain JSON, so the timestamps in
 * metadata are strings at run time whatever V1ObjectMeta says; the code only tests their presence.
 */
export interface PoolPolicy {
  apiVersion: string;
  kind: string;
  metadata: V1ObjectMeta & { name: string; namespace: string };
  spec: unknown;
  status?: PoolPolicyStatus;
}

export type SpecValidation = { ok: true; spec: PoolPolicySpec } | { ok: false; message: string };

/** Validates a spec as stored; on failure, a message naming each offending field. */
export function validateSpec(spec: unknown): SpecValidation {
  const result = poolPolicySpecSchema.safeParse(spec);
  if (result.success) return { ok: true, spec: result.data };
  const message = result.error.issues.map((issue) => `spec.${issue.path.join(".")}: ${issue.message}`).join("; ");
  return { ok: false, message };
}

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}
