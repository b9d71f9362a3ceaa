/**
 * The connection budget of one PostgreSQL server: the arithmetic behind "too many clients".
 *
 *   demand   = Σ over every target Deployment of every policy pointing at the server:
 *                pool max × worst-case pods
 *              + reserve (superuser_reserved_connections + reserved_connections
 *                         + the operator's own connections + the spec's extra reserve)
 *   capacity = max_connections
 *
 * Worst-case pods: the HPA's maxReplicas when an HPA scales the Deployment, else its replicas,
 * plus the rollout surge (during a RollingUpdate, old and new pods hold pools at once).
 * Pure functions only: the wiring gathers the numbers, this file does the sums.
 */

export interface BudgetTarget {
  /** "namespace/policy" that governs the Deployment. */
  policy: string;
  /** "namespace/name" of the Deployment. */
  deployment: string;
  poolMax: number;
  replicas: number;
  /** maxReplicas of the HPA that scales this Deployment, if any. */
  hpaMaxReplicas?: number;
  /** The Deployment's spec.strategy; maxSurge may be a count or a percentage ("25%"). */
  strategy?: { type?: string; rollingUpdate?: { maxSurge?: number | string } };
}

export interface BudgetReserve {
  superuserReserved: number;
  /** PostgreSQL 16+ reserved_connections; 0 before. */
  reserved: number;
  /** The operator's own pool to this server. */
  operator: number;
  /** Monitoring, backups, replication: declared in the spec. */
  extra: number;
}

export interface TargetDemand {
  policy: string;
  deployment: string;
  poolMax: number;
  podsWorstCase: number;
  connections: number;
}

export interface Budget {
  demand: number;
  capacity: number;
  reserve: number;
  targets: TargetDemand[];
  withinLimits: boolean;
}

/** Kubernetes' default maxSurge for a RollingUpdate Deployment. */
const DEFAULT_MAX_SURGE = "25%";

/** Extra pods a rollout may add: maxSurge as a count, or a percentage of replicas rounded up. */
export function surgePods(replicas: number, strategy: BudgetTarget["strategy"]): number {
  if (strategy?.type === "Recreate") return 0;
  const maxSurge = strategy?.rollingUpdate?.maxSurge ?? DEFAULT_MAX_SURGE;
  if (typeof maxSurge === "number") return Math.max(0, maxSurge);
  const percent = /^(\d+)%$/.exec(maxSurge);
  if (percent) return Math.ceil((replicas * Number(percent[1])) / 100);
  const count = Number(maxSurge);
  return Number.isInteger(count) && count >= 0 ? count : 0;
}

export function worstCasePods(target: Pick<BudgetTarget, "replicas" | "hpaMaxReplicas" | "strategy">): number {
  const replicas = Math.max(target.replicas, target.hpaMaxReplicas ?? 0);
  return replicas + surgePods(replicas, target.strategy);
}

export function reserveTotal(r: BudgetReserve): number {
  return r.superuserReserved + r.reserved + r.operator + r.extra;
}

export function computeBudget(
  targets: readonly BudgetTarget[],
  reserve: BudgetReserve,
  maxConnections: number,
): Budget {
  const perTarget = targets.map((t) => {
    const podsWorstCase = worstCasePods(t);
    return {
      policy: t.policy,
      deployment: t.deployment,
      poolMax: t.poolMax,
      podsWorstCase,
      connections: podsWorstCase * t.poolMax,
    };
  });
  const reserved = reserveTotal(reserve);
  const demand = perTarget.reduce((sum, t) => sum + t.connections, 0) + reserved;
  return {
    demand,
    capacity: maxConnections,
    reserve: reserved,
    targets: perTarget,
    withinLimits: demand <= maxConnections,
  };
}

export interface AutoSizeOptions {
  /** Extra room above demand, in percent (e.g. 20). */
  headroomPercent: number;
  /** Never size above this. */
  ceiling: number;
  /** Never size below what is in use right now (0: no such floor). */
  currentUsage?: number;
  /** Round up to a multiple of this, so that small demand changes do not restart PostgreSQL. */
  step?: number;
}

/**
 * max_connections for `maxConnections: auto`: demand plus headroom, rounded up to a step, at
 * least the current usage (plus the reserve it already counts), at most the ceiling, and
 * within PostgreSQL's range.
 */
export function autoSizeMaxConnections(demand: number, o: AutoSizeOptions): number {
  const step = o.step ?? 10;
  const wanted = Math.ceil((demand * (100 + o.headroomPercent)) / 100 / step) * step;
  const floor = Math.max(wanted, o.currentUsage ?? 0, 1);
  return Math.min(floor, o.ceiling, 262143);
}
