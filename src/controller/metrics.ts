/**
 * The domain's metrics, on the process-wide registry of the runtime: what the servers look
 * like (connections by state, max_connections, usage) and what the operator did to them.
 */
import { Counter, Gauge } from "prom-client";
import { registry } from "../runtime/metrics.js";
import type { PostgresTarget } from "../postgres/connection.js";
import type { ServerFacts } from "../postgres/inspect.js";

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
  statusWrites: new Counter({
    name: "poolpolicy_status_writes_total",
    help: "PoolPolicy status updates written to the API server",
    registers: [registry],
  }),
  observeServer(target: PostgresTarget, facts: ServerFacts): void {
    const server = `${target.host}:${target.port}`;
    const c = facts.connections;
    connections.set({ server, state: "active" }, c.active);
    connections.set({ server, state: "idle" }, c.idle);
    connections.set({ server, state: "idle_in_transaction" }, c.idleInTransaction);
    connections.set({ server, state: "total" }, c.total);
    maxConnections.set({ server }, facts.maxConnections);
    usageRatio.set({ server }, facts.maxConnections > 0 ? c.total / facts.maxConnections : 0);
  },
};
