/**
 * A diagnose report's facts, healthy by default; each test changes what its rule is about.
 */
import type { Facts } from "../../../src/cli/findings.js";
import type { BudgetSection, PostgresSection, RoleSection } from "../../../src/cli/report.js";
import { planRoleLimit } from "../../../src/server/role-limits.js";

type Reachable = Extract<PostgresSection, { reachable: true }>;

export function server(overrides: Partial<Reachable> = {}): Reachable {
  const connections = overrides.connections ?? { total: 20, active: 5, idle: 8, idleInTransaction: 2 };
  const maxConnections = overrides.maxConnections ?? 100;
  const superuserReservedConnections = overrides.superuserReservedConnections ?? 3;
  return {
    reachable: true,
    version: "15.14",
    maxConnections,
    settingSource: "configuration file",
    pendingRestart: false,
    postmasterStartTime: "2026-11-26T10:00:00.000Z",
    superuserReservedConnections,
    reservedConnections: 0,
    isSuperuser: true,
    connections,
    usagePercent: Math.round((100 * connections.total) / maxConnections),
    ordinarySlotsFree: maxConnections - superuserReservedConnections - (connections.total - 1),
    ...overrides,
  };
}

export function budget(overrides: Partial<BudgetSection> = {}): BudgetSection {
  return {
    server: "db:5432",
    policies: ["shop/p", "reports/q"],
    targets: [
      { policy: "shop/p", deployment: "shop/api", poolMax: 10, podsWorstCase: 7, connections: 70 },
      { policy: "shop/p", deployment: "shop/worker", poolMax: 10, podsWorstCase: 2, connections: 20 },
      { policy: "reports/q", deployment: "reports/reports", poolMax: 10, podsWorstCase: 2, connections: 20 },
    ],
    reserve: { superuserReserved: 3, reserved: 0, operator: 2, extra: 0, total: 5 },
    demand: 115,
    capacity: 100,
    withinLimits: false,
    headroomPercent: 20,
    ceiling: 1000,
    notes: [],
    ...overrides,
  };
}

export function facts(overrides: Partial<Facts> = {}): Facts {
  return {
    subject: { policy: "shop/p", server: "db:5432", database: "appdb", user: "postgres" },
    policy: {
      maxConnections: undefined,
      pool: { minSize: 5, maxSize: 10 },
      reaper: { enabled: true, dryRun: false, idleInTransactionTimeout: "5m" },
      conditions: [{ type: "Ready", status: "True", reason: "Converged", message: "all good" }],
    },
    postgres: server(),
    sessions: {
      byDatabase: [],
      byUserAndApplication: [],
      oldestIdleInTransaction: [],
      idleThreshold: "5m",
      idleThresholdMs: 300_000,
      idleInTransactionOverThreshold: 0,
    },
    ...overrides,
  };
}

/**
 * A role held to its share, as diagnose reports it: the plan is the operator's own
 * (planRoleLimit) for these numbers. By default "app" of shop/p, share 20 + 2, in force, 5 sessions.
 */
export function role(
  o: Partial<
    Pick<RoleSection, "role" | "exists" | "superuser" | "operatorRole" | "connectionLimit" | "connections">
  > & {
    demand?: number;
    margin?: number;
    policies?: string[];
  } = {},
): RoleSection {
  const name = o.role ?? "app";
  const demand = o.demand ?? 20;
  const margin = o.margin ?? 2;
  const share = { demand, margin, limit: demand + margin, policies: o.policies ?? ["shop/p"] };
  const facts = {
    name,
    exists: o.exists ?? true,
    superuser: o.superuser ?? false,
    isOperator: o.operatorRole ?? false,
    connectionLimit: o.connectionLimit ?? share.limit,
    connections: o.connections ?? 5,
  };
  return {
    role: name,
    share,
    exists: facts.exists,
    superuser: facts.superuser,
    operatorRole: facts.isOperator,
    connectionLimit: facts.connectionLimit,
    connections: facts.connections,
    plan: planRoleLimit({ role: name, ...share }, facts, "db:5432"),
  };
}
