/**
 * A PgBouncer sized from the server's budget (issue 17.1): how many server connections each
 * pooler pod may open, and how many clients it must accept. Pure functions, like
 * role-limits.ts; the operator and `poolpolicy diagnose` are meant to call the same ones.
 *
 *   left     = max_connections − reserved − direct
 *   per pod  = ⌊ left ÷ worst-case pooler pods ⌋          (split evenly among its databases)
 *
 * where `reserved` is the budget's reserve (superuser_reserved_connections,
 * reserved_connections, the operator's own pool and the declared spec.budget.reserve: the
 * slots no app may take), `direct` the budget's worst case of the apps that bypass the pooler
 * (policies with spec.pool.via Direct), and the pooler's worst-case pods its replicas, or its
 * HPA's maxReplicas, plus the rollout surge, counted exactly as the apps' pods are
 * (budget.worstCasePods): during a rollout the old and the new pooler pods hold server
 * connections at the same time, and each of them enforces its own cap, not a shared one.
 *
 * The one promise, proven by property in test/unit/server/pooler-plan.test.ts:
 *   pods × per-pod server connections + direct + reserved ≤ max_connections, always.
 * A pooler that cannot keep it with a useful share per pod is refused with the numbers, never
 * shrunk to nothing.
 *
 * Why the cap is PgBouncer's max_db_connections and not default_pool_size alone: PgBouncer
 * keeps one pool per (database, user) pair, each up to default_pool_size (+ reserve_pool_size
 * when clients wait), so with two app roles a pod could open twice its pool size.
 * max_db_connections caps every pool of one database together, whatever the number of users;
 * it is the figure the sum above holds. default_pool_size + reserve_pool_size are kept within it.
 */
import { type Budget, type BudgetTarget, worstCasePods } from "../budget/budget.js";

/** The pooler's own shape as far as its pod count goes (spec.pooler, and an HPA on its Deployment). */
export type PoolerPods = Pick<BudgetTarget, "replicas" | "hpaMaxReplicas" | "strategy">;

export interface PoolerPlanInput {
  /** The server's max_connections now (or the value the policies are about to apply). */
  maxConnections: number;
  /** The budget's reserve: reserved slots, the operator's pool and the declared reserve. */
  reserved: number;
  /** Worst-case connections of the apps that reach the server directly. */
  direct: number;
  /** Worst-case connections of the apps that go through the pooler: its clients. */
  throughPooler: number;
  pods: PoolerPods;
  /**
   * Databases the pooler serves. Each gets its own max_db_connections in PgBouncer, so the
   * per-pod share is split among them.
   */
  databases: number;
  /** The least server connections per pod and database worth running (spec.pooler). */
  minServerConnectionsPerPod: number;
  /** reserve_pool_size asked for (spec.pooler); taken out of the share, never added to it. */
  reservePoolSize: number;
}

/** What one pooler pod is configured with (pgbouncer.ini), and the arithmetic behind it. */
export interface PoolerSizing {
  kind: "sized";
  /** Worst-case pooler pods. */
  pods: number;
  /** max_connections − reserved − direct. */
  left: number;
  /** Server connections one pod may open, over all its databases. */
  perPod: number;
  /** max_db_connections: server connections of one pod to one database. */
  maxDbConnections: number;
  /** default_pool_size: max_db_connections − reserve_pool_size. */
  defaultPoolSize: number;
  reservePoolSize: number;
  /** max_client_conn: every app client through the pooler, plus the admin console's. */
  maxClientConn: number;
}

export interface PoolerRefusal {
  kind: "refused";
  reason: "PoolerDoesNotFit";
  message: string;
  /** Server connections per pod the pooler needs at least. */
  needed: number;
  /** Server connections per pod that are left for it. */
  available: number;
}

export type PoolerPlan = PoolerSizing | PoolerRefusal;

/**
 * Client connections kept for the admin console on top of the apps' worst case: the
 * operator's RELOAD and SHOW POOLS, and a person with psql. PgBouncer counts them against
 * max_client_conn like any client, so an app surge must not lock the operator out.
 */
export const POOLER_ADMIN_CLIENTS = 5;

/** The one decision about a pooler's sizes; `server` names the server in messages (host:port). */
export function planPooler(input: PoolerPlanInput, server: string): PoolerPlan {
  const pods = Math.max(1, worstCasePods(input.pods));
  const databases = Math.max(1, input.databases);
  const left = Math.max(0, input.maxConnections - input.reserved - input.direct);
  const perDatabase = Math.floor(left / pods / databases);
  const neededPerDatabase = Math.max(1, input.minServerConnectionsPerPod, input.reservePoolSize + 1);
  if (perDatabase < neededPerDatabase) {
    const needed = neededPerDatabase * databases;
    const available = Math.floor(left / pods);
    const perDb = databases > 1 ? ` (${neededPerDatabase} for each of its ${databases} databases)` : "";
    return {
      kind: "refused",
      reason: "PoolerDoesNotFit",
      needed,
      available,
      message:
        `the pooler needs at least ${needed} server connections per pod${perDb}; ` +
        `${server} has ${left} left (max_connections ${input.maxConnections} − direct clients ${input.direct} − reserved ${input.reserved}), ` +
        `${available} per pod for ${pods} worst-case pooler pods: raise max_connections, route more apps through the pooler, ` +
        "run fewer pooler pods, or lower spec.pooler.minServerConnectionsPerPod",
    };
  }
  const reservePoolSize = input.reservePoolSize;
  return {
    kind: "sized",
    pods,
    left,
    perPod: perDatabase * databases,
    maxDbConnections: perDatabase,
    defaultPoolSize: perDatabase - reservePoolSize,
    reservePoolSize,
    maxClientConn: Math.max(1, input.throughPooler) + POOLER_ADMIN_CLIENTS,
  };
}

/** The budget's worst case split by route: the targets of `pooled` policies go through the pooler. */
export function splitByRoute(budget: Budget, pooled: ReadonlySet<string>): { direct: number; throughPooler: number } {
  let direct = 0;
  let throughPooler = 0;
  for (const t of budget.targets) {
    if (pooled.has(t.policy)) throughPooler += t.connections;
    else direct += t.connections;
  }
  return { direct, throughPooler };
}

/** The arithmetic in words, for conditions, Events and the CLI (numbers only, never a secret). */
export function explainSizing(s: PoolerSizing): string {
  return (
    `${s.perPod} server connections per pod (max_db_connections ${s.maxDbConnections}, default_pool_size ${s.defaultPoolSize}, ` +
    `reserve_pool_size ${s.reservePoolSize}) × ${s.pods} worst-case pods ≤ ${s.left} left after direct clients and reserved slots; ` +
    `max_client_conn ${s.maxClientConn}`
  );
}
