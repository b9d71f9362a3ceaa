/**
 * The domain's metrics, on the process-wide registry of the runtime: what the servers look
 * like (connections by state, max_connections, usage, the connection budget) and what the
 * operator did to them (sessions reaped, restarts requested and verified, status writes).
 *
 * Every per-server series is labelled `server="host:port"` (src/server/identity.ts), the unit the budget is computed
 * for (several PoolPolicies may point at one server). The chart's PrometheusRule
 * (charts/poolpolicy-operator/templates/prometheusrule.yaml) alerts on these names: renaming
 * one breaks an alert, which test/unit/chart/alerts.test.ts catches.
 */
import { Counter, Gauge } from "prom-client";
import { registry } from "../runtime/metrics.js";
import type { Budget } from "../budget/budget.js";
import type { ServerKey } from "../server/identity.js";
import type { ServerFacts } from "../postgres/inspect.js";
import type { PoolerPlan } from "../server/pooler-plan.js";

const serverLabels = ["server"] as const;

const connections = new Gauge({
  name: "poolpolicy_postgres_connections",
  help: "Client backends on the server, by state",
  labelNames: [...serverLabels, "state"],
  registers: [registry],
});
const maxConnections = new Gauge({
  name: "poolpolicy_postgres_max_connections",
  help: "max_connections in force on the server",
  labelNames: serverLabels,
  registers: [registry],
});
const usageRatio = new Gauge({
  name: "poolpolicy_postgres_usage_ratio",
  help: "Client backends / max_connections",
  labelNames: serverLabels,
  registers: [registry],
});

const budgetDemand = new Gauge({
  name: "poolpolicy_budget_demand_connections",
  help: "Worst-case connections of every policy pointing at the server: pool max × worst-case pods, plus reserves",
  labelNames: serverLabels,
  registers: [registry],
});
const budgetCapacity = new Gauge({
  name: "poolpolicy_budget_capacity_connections",
  help: "Connections the server accepts (max_connections) that the budget is measured against",
  labelNames: serverLabels,
  registers: [registry],
});

const budgetMemoryCeiling = new Gauge({
  name: "poolpolicy_budget_memory_ceiling_connections",
  help: "The largest max_connections the PostgreSQL container's memory carries (absent while its limit is not known)",
  labelNames: serverLabels,
  registers: [registry],
});

const roleLabels = ["server", "role"] as const;
const roleLimit = new Gauge({
  name: "poolpolicy_role_connection_limit",
  help: "The CONNECTION LIMIT of an app role a policy enforces (spec.enforcement.connectionLimit), as last read; absent while the role has none",
  labelNames: roleLabels,
  registers: [registry],
});
const roleShare = new Gauge({
  name: "poolpolicy_role_share_connections",
  help: "The connections an app role's policies need at worst (pool max × worst-case pods) plus their margins: the limit the role should have",
  labelNames: roleLabels,
  registers: [registry],
});
const roleConnections = new Gauge({
  name: "poolpolicy_role_connections",
  help: "Sessions of an app role a policy enforces a limit for, every database counted",
  labelNames: roleLabels,
  registers: [registry],
});

const restartsHeld = new Gauge({
  name: "poolpolicy_postgres_restarts_held",
  help: "1 while the restart limit holds restarts of a PostgreSQL workload until a person releases them",
  labelNames: ["workload"],
  registers: [registry],
});

const poolerLabels = ["server", "pooler"] as const;
const poolerFits = new Gauge({
  name: "poolpolicy_pooler_fits",
  help: "1 when the server's budget leaves the declared pooler its minimum per pod (PoolerSized Sized), 0 when it is refused (PoolerDoesNotFit)",
  labelNames: poolerLabels,
  registers: [registry],
});
const poolerPerPod = new Gauge({
  name: "poolpolicy_pooler_server_connections_per_pod",
  help: "Server connections each PgBouncer pod may open, over all its databases (max_db_connections each); absent while the pooler is refused",
  labelNames: poolerLabels,
  registers: [registry],
});
const poolerPods = new Gauge({
  name: "poolpolicy_pooler_pods_worst_case",
  help: "PgBouncer pods the sizing counts: replicas (or the HPA's maxReplicas) plus the rollout surge",
  labelNames: poolerLabels,
  registers: [registry],
});
const poolerClients = new Gauge({
  name: "poolpolicy_pooler_max_client_connections",
  help: "max_client_conn of each PgBouncer pod: the pooled apps' worst case plus the admin console",
  labelNames: poolerLabels,
  registers: [registry],
});

export const operatorMetrics = {
  sessionsReaped: new Counter({
    name: "poolpolicy_reaper_sessions_terminated_total",
    help: "Sessions terminated for being idle in transaction too long",
    labelNames: ["namespace"],
    registers: [registry],
  }),
  restartsRequested: new Counter({
    name: "poolpolicy_postgres_restarts_requested_total",
    help: "Rolling restarts of PostgreSQL workloads requested to apply max_connections",
    registers: [registry],
  }),
  restartLimitReached: new Counter({
    name: "poolpolicy_postgres_restart_limit_reached_total",
    help: "Times a PostgreSQL workload reached the restart limit (MAX_RESTARTS_PER_HOUR) and restarts were held",
    registers: [registry],
  }),
  restartsVerified: new Counter({
    name: "poolpolicy_postgres_restarts_verified_total",
    help: "Restarts after which the new max_connections was verified in force (pg_postmaster_start_time() advanced)",
    registers: [registry],
  }),
  statusWrites: new Counter({
    name: "poolpolicy_status_writes_total",
    help: "PoolPolicy status updates written to the API server",
    labelNames: ["namespace"],
    registers: [registry],
  }),
  /** `server` is the server's key (src/server/identity.ts): host:port as the budget counts it. */
  observeServer(server: ServerKey, facts: ServerFacts): void {
    const c = facts.connections;
    connections.set({ server, state: "active" }, c.active);
    connections.set({ server, state: "idle" }, c.idle);
    connections.set({ server, state: "idle_in_transaction" }, c.idleInTransaction);
    connections.set({ server, state: "total" }, c.total);
    maxConnections.set({ server }, facts.maxConnections);
    usageRatio.set({ server }, facts.maxConnections > 0 ? c.total / facts.maxConnections : 0);
  },
  /** The server's budget as the reconcile computed it. */
  observeBudget(server: ServerKey, budget: Budget): void {
    budgetDemand.set({ server }, budget.demand);
    budgetCapacity.set({ server }, budget.capacity);
  },
  /** The server's memory ceiling; no series while it is not known, rather than a made-up number. */
  observeMemoryCeiling(server: ServerKey, ceiling: number | undefined): void {
    if (ceiling === undefined) budgetMemoryCeiling.remove({ server });
    else budgetMemoryCeiling.set({ server }, ceiling);
  },
  /** An enforced role: its share, its limit as read (undefined: none) and its sessions. */
  observeRole(
    server: ServerKey,
    role: string,
    o: { share: number; limit: number | undefined; connections: number },
  ): void {
    roleShare.set({ server, role }, o.share);
    roleConnections.set({ server, role }, o.connections);
    if (o.limit === undefined) roleLimit.remove({ server, role });
    else roleLimit.set({ server, role }, o.limit);
  },
  /** A role no policy of the server enforces any more: no series left behind. */
  forgetRole(server: ServerKey, role: string): void {
    for (const g of [roleShare, roleConnections, roleLimit]) g.remove({ server, role });
  },
  /** The declared pooler's plan (`pooler` is "namespace/name"): its sizes, or only fits = 0 when refused. */
  observePooler(server: ServerKey, pooler: string, plan: PoolerPlan): void {
    const labels = { server, pooler };
    poolerFits.set(labels, plan.kind === "sized" ? 1 : 0);
    if (plan.kind === "sized") {
      poolerPerPod.set(labels, plan.perPod);
      poolerPods.set(labels, plan.pods);
      poolerClients.set(labels, plan.maxClientConn);
    } else {
      for (const g of [poolerPerPod, poolerPods, poolerClients]) g.remove(labels);
    }
  },
  observeRestartsHeld(workload: string, held: boolean): void {
    restartsHeld.set({ workload }, held ? 1 : 0);
  },
};
