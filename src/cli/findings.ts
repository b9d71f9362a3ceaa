/**
 * From facts to findings: what is wrong, and what to do about it with the numbers. Pure, so
 * that every rule is unit-tested without a server (test/unit/cli/findings.test.ts).
 *
 * A critical or warning finding makes `diagnose` exit 1. The rules, in the order of the
 * report: PostgreSQL unreachable; no slot left for ordinary roles; usage ≥ 85 % (warning) or
 * ≥ 95 % (critical); worst-case demand above capacity; sessions idle in transaction past the
 * threshold; required extensions missing; Redis down when required (a notice otherwise);
 * max_connections above what the PostgreSQL container's memory carries (warning); a role held to
 * its share (spec.enforcement.connectionLimit) that the operator refuses to limit, that is at its
 * CONNECTION LIMIT, or whose limit is below its share (warnings), or above it (a notice); a
 * pooler that does not fit, is not declared or is declared in conflict (warnings).
 */
import { formatDuration } from "../api/duration.js";
import { MAX_CONNECTIONS_MAX } from "../api/schema.js";
import { autoSizeMaxConnections } from "../budget/budget.js";
import { explainShare, limitReached } from "../server/role-limits.js";
import type { BudgetSection, DiagnoseReport, Finding, PostgresSection, RoleSection, Severity } from "./report.js";

export const USAGE_WARNING_PERCENT = 85;
export const USAGE_CRITICAL_PERCENT = 95;
/** Redis is "near its limit" from this share of maxclients on, as the operator's RedisAvailable condition says. */
const REDIS_NEAR_LIMIT = 0.9;
/** Suggestions for max_connections from current usage keep at least this much room. */
const MIN_USAGE_HEADROOM_PERCENT = 20;

export type Facts = Omit<DiagnoseReport, "findings" | "ok">;

export interface FindingContext {
  /** How to run `reap` on the same subject, for recommendations: "poolpolicy reap ns/p". */
  reapCommand: string;
}

type Reachable = Extract<PostgresSection, { reachable: true }>;
type Add = (severity: Severity, code: string, message: string, recommendation?: string) => void;

export function analyze(facts: Facts, ctx: FindingContext): Finding[] {
  const findings: Finding[] = [];
  const add: Add = (severity, code, message, recommendation) =>
    findings.push(recommendation ? { severity, code, message, recommendation } : { severity, code, message });

  const pg = facts.postgres;
  if (!pg.reachable) {
    add("critical", "PostgresUnreachable", pg.message, unreachableAdvice(pg.reason));
  } else {
    slotsAndUsage(facts, pg, add);
    if (pg.pendingRestart) {
      const next = pg.alterSystemValue !== undefined ? `max_connections = ${pg.alterSystemValue}` : "a changed setting";
      const how =
        facts.policy?.maxConnections !== undefined
          ? "the operator restarts it: see the policy's MaxConnectionsApplied condition"
          : "restart PostgreSQL to apply it";
      add(
        "notice",
        "RestartPending",
        `${next} waits for a restart (in force: max_connections = ${pg.maxConnections})`,
        how,
      );
    }
  }

  if (facts.budget && !facts.budget.withinLimits && pg.reachable) {
    add("critical", "BudgetExceeded", budgetMessage(facts.budget), budgetAdvice(facts, pg, facts.budget));
  }
  const memory = facts.budget?.memory;
  if (memory && memory.condition.status === "False" && pg.reachable) {
    // The operator's own MemoryWithinLimits words (src/controller/server-budget.ts), numbers and advice included.
    add("warning", memory.condition.reason, memory.condition.message);
  }

  const pooler = facts.budget?.pooler;
  if (pooler && pooler.state !== "sized" && pg.reachable) {
    // The operator's own PoolerSized words (src/controller/pooler-step.ts): nothing of it is rolled out.
    const reason = { refused: "PoolerDoesNotFit", notDeclared: "PoolerNotDeclared", conflict: "PoolerConflict" };
    const what = pooler.state === "refused" ? `pooler ${pooler.name} is not rolled out: ` : "";
    add("warning", reason[pooler.state], `${what}${pooler.message}`);
  }

  for (const role of facts.roles ?? []) roleFindings(role, add);

  const s = facts.sessions;
  // Without pg_read_all_stats, other roles' sessions show no state: the counts above undercount.
  const hidden = s?.byUserAndApplication.reduce((n, g) => n + g.other, 0) ?? 0;
  if (pg.reachable && !pg.isSuperuser && hidden > 0) {
    add(
      "notice",
      "SessionsHidden",
      `${hidden} session(s) of other roles show no state to ${facts.subject.user}: they count as "other", and those idle in transaction are not listed`,
      `GRANT pg_read_all_stats TO ${quoteIdent(facts.subject.user)}`,
    );
  }
  if (s && s.idleInTransactionOverThreshold > 0) {
    const over = s.oldestIdleInTransaction.filter((x) => x.idleSeconds * 1000 >= s.idleThresholdMs);
    const oldest = s.oldestIdleInTransaction[0];
    const who = oldest
      ? `; the oldest: pid ${oldest.pid} (user ${oldest.user || "?"}, application "${oldest.applicationName}", client ${oldest.clientAddress ?? "local socket"}, database ${oldest.database}), idle for ${formatDuration(oldest.idleSeconds * 1000)}`
      : "";
    const users = [...new Set(over.map((x) => x.user).filter(Boolean))];
    const prevent =
      users.length > 0
        ? `; to prevent it: ${users.map((u) => `ALTER ROLE ${quoteIdent(u)} SET idle_in_transaction_session_timeout = '${Math.max(1, Math.round(s.idleThresholdMs / 1000))}s'`).join("; ")}`
        : "";
    add(
      "warning",
      "IdleInTransaction",
      `${s.idleInTransactionOverThreshold} session(s) idle in transaction for more than ${s.idleThreshold}, each holding a connection slot and its locks${who}`,
      `terminate them: ${ctx.reapCommand} --older-than ${s.idleThreshold} --execute${prevent}`,
    );
  }

  const e = facts.extensions;
  if (e && e.missing.length > 0) {
    add(
      "critical",
      "ExtensionMissing",
      `required extension(s) missing in database ${e.database}: ${e.missing.map((m) => m.name).join(", ")}`,
      e.missing
        .map((m) =>
          m.availableOnServer
            ? `CREATE EXTENSION ${m.name} in database ${e.database}`
            : `install the package that provides ${m.name} on the server (it is not available there), then CREATE EXTENSION ${m.name}`,
        )
        .join("; "),
    );
  }

  const r = facts.redis;
  if (r) {
    if (!r.available) {
      add(
        r.required ? "critical" : "notice",
        "RedisUnavailable",
        `${r.message}${r.required ? "" : " (not required)"}`,
        "check that Redis runs and that the URL in the Secret points at it",
      );
    } else {
      const max = r.maxClients ?? 0;
      const connected = r.connectedClients ?? 0;
      if (max > 0 && connected >= REDIS_NEAR_LIMIT * max) {
        const raise = Math.ceil((connected * 1.5) / 100) * 100;
        add(
          "warning",
          "RedisNearClientLimit",
          `Redis has ${connected} of ${max} clients connected; beyond ${max} clients get "ERR max number of clients reached"`,
          `raise maxclients to ${raise} (CONFIG SET maxclients ${raise}, and in redis.conf so that it survives a restart)`,
        );
      }
      if ((r.rejectedConnections ?? 0) > 0) {
        add(
          "notice",
          "RedisRejectedClients",
          `Redis turned away ${r.rejectedConnections} client connection(s) since it started (maxclients ${max})`,
        );
      }
    }
  }

  for (const c of facts.policy?.conditions ?? []) {
    if (c.type !== "Ready" && c.status !== "True")
      add("notice", "PolicyCondition", `the operator reports ${c.type}=${c.status} (${c.reason}): ${c.message}`);
  }
  if (facts.policy && facts.policy.conditions.length === 0) {
    add(
      "notice",
      "NoStatus",
      "the operator has not reported on this PoolPolicy yet (is it running and watching this namespace?)",
    );
  }

  const rank: Record<Severity, number> = { critical: 0, warning: 1, notice: 2 };
  return findings.sort((a, b) => rank[a.severity] - rank[b.severity]);
}

export function isOk(findings: readonly Finding[]): boolean {
  return findings.every((f) => f.severity === "notice");
}

function slotsAndUsage(
  facts: Facts,
  pg: Reachable,
  add: (s: Severity, code: string, m: string, r?: string) => void,
): void {
  const c = pg.connections;
  const reserved = pg.superuserReservedConnections + pg.reservedConnections;
  const headroom = Math.max(facts.budget?.headroomPercent ?? 0, MIN_USAGE_HEADROOM_PERCENT);
  // What is in use plus the reserved slots, with headroom; never a value at or below today's.
  const sizeFor = (need: number) =>
    autoSizeMaxConnections(need, { headroomPercent: headroom, ceiling: MAX_CONNECTIONS_MAX, currentUsage: c.total });
  let size = sizeFor(c.total + reserved);
  if (size <= pg.maxConnections) size = sizeFor(pg.maxConnections);
  const breakdown = `${c.active} active, ${c.idle} idle, ${c.idleInTransaction} idle in transaction`;
  const advice = [raiseAdvice(facts, pg, size)];
  if (c.total > 0 && c.idle * 2 >= c.total) {
    const minSize = facts.policy ? ` (pool.minSize of ${facts.subject.policy} is ${facts.policy.pool.minSize})` : "";
    advice.push(
      `${c.idle} of the ${c.total} sessions are idle: pools keep connections they do not use; lower the pools' minimum size${minSize}`,
    );
  }
  if (pg.ordinarySlotsFree <= 0) {
    add(
      "critical",
      "NoFreeSlots",
      `no connection slot left for ordinary roles: ${c.total} sessions (${breakdown}) on max_connections ${pg.maxConnections}, of which ${reserved} are reserved; new connections get "sorry, too many clients already"`,
      advice.join("; "),
    );
    return; // the usage rules would only repeat it
  }
  if (pg.usagePercent >= USAGE_WARNING_PERCENT) {
    const critical = pg.usagePercent >= USAGE_CRITICAL_PERCENT;
    add(
      critical ? "critical" : "warning",
      critical ? "UsageCritical" : "UsageHigh",
      `${c.total} of ${pg.maxConnections} connections in use (${pg.usagePercent}% ≥ ${critical ? USAGE_CRITICAL_PERCENT : USAGE_WARNING_PERCENT}%): ${breakdown}; ${pg.ordinarySlotsFree} slot(s) left for ordinary roles`,
      advice.join("; "),
    );
  }
}

/**
 * A role held to its share. The operator's own plan (planRoleLimit) says whether the limit is
 * below the share (it raises it before the pools grow), above it (it lowers it once the apps
 * rolled out) or refused; limitReached whether PostgreSQL refuses the role's next session.
 */
function roleFindings(r: RoleSection, add: Add): void {
  const { plan } = r;
  if (plan.kind === "refused") {
    add("warning", plan.reason, plan.message);
    return;
  }
  const name = JSON.stringify(r.role);
  const share = explainShare({ role: r.role, ...r.share });
  const policies = r.share.policies.join(", ");
  const below = plan.kind === "change" && plan.direction === "raise";
  if (limitReached(r)) {
    add(
      "warning",
      "RoleLimitReached",
      `role ${name} has ${r.connections} session(s), its CONNECTION LIMIT is ${r.connectionLimit} (share ${r.share.limit}: ${share}): new sessions of ${name} are refused ("too many connections for role")`,
      below
        ? `its limit is below its share: see RoleLimitBelowShare`
        : `find who holds them (user ${r.role} under CONNECTIONS BY USER AND APPLICATION): something connects beyond the pools (a client of its own, a leak, more pods than the budget knows); or raise spec.enforcement.connectionLimit.margin of ${policies}`,
    );
  }
  if (below) {
    add(
      "warning",
      "RoleLimitBelowShare",
      `the CONNECTION LIMIT of role ${name} is ${r.connectionLimit}, below its share ${r.share.limit} (${share}): its apps' pools cannot all connect at their worst case`,
      `the operator raises it to ${r.share.limit} before the pools grow: if it stays below, check that the operator runs and read the RoleConnectionLimit condition of ${policies}; by hand: ALTER ROLE ${quoteIdent(r.role)} CONNECTION LIMIT ${r.share.limit}`,
    );
  } else if (plan.kind === "change") {
    add(
      "notice",
      "RoleLimitAboveShare",
      `role ${name} has ${r.connectionLimit < 0 ? "no CONNECTION LIMIT" : `CONNECTION LIMIT ${r.connectionLimit}`}, more than its share ${r.share.limit} (${share}): the operator lowers it once the apps of ${policies} run with their new pools`,
    );
  }
}

function budgetMessage(b: BudgetSection): string {
  const deployments = b.targets.length;
  return `demand ${b.demand} > capacity ${b.capacity}: worst case, the pools of ${deployments} Deployment(s) of ${b.policies.length} PoolPolicy(ies) on ${b.server} need ${b.demand - b.reserve.total} connections plus ${b.reserve.total} reserved, ${b.demand - b.capacity} more than max_connections`;
}

function budgetAdvice(facts: Facts, pg: Reachable, b: BudgetSection): string {
  const size = autoSizeMaxConnections(b.demand, {
    headroomPercent: b.headroomPercent,
    ceiling: MAX_CONNECTIONS_MAX,
    currentUsage: pg.connections.total,
  });
  const memory = b.memory?.known ? b.memory : undefined;
  const options =
    memory && size > memory.ceiling
      ? [
          `max_connections above ${memory.ceiling} does not fit in ${memory.source}: give PostgreSQL more memory, or put a connection pooler in front`,
        ]
      : [raiseAdvice(facts, pg, size)];
  const cut = poolCut(b);
  if (cut)
    options.push(`lower pool.maxSize of ${cut.policy} (${cut.deployments.join(", ")}) from ${cut.from} to ${cut.to}`);
  return options.join(", or ");
}

/**
 * The smallest change of one policy's pool that fits the budget: the policy that contributes
 * most, its pool max lowered until demand ≤ capacity. undefined when no pool size ≥ 1 fits.
 */
export function poolCut(
  b: BudgetSection,
): { policy: string; deployments: string[]; from: number; to: number } | undefined {
  const byPolicy = new Map<string, { connections: number; pods: number; poolMax: number; deployments: string[] }>();
  for (const t of b.targets) {
    const p = byPolicy.get(t.policy) ?? { connections: 0, pods: 0, poolMax: t.poolMax, deployments: [] };
    p.connections += t.connections;
    p.pods += t.podsWorstCase;
    p.deployments.push(t.deployment.split("/").pop()!);
    byPolicy.set(t.policy, p);
  }
  const [policy, biggest] = [...byPolicy.entries()].sort((x, y) => y[1].connections - x[1].connections)[0] ?? [];
  if (!policy || !biggest || biggest.pods === 0) return undefined;
  const othersNeed = b.demand - biggest.connections;
  const to = Math.floor((b.capacity - othersNeed) / biggest.pods);
  if (to < 1 || to >= biggest.poolMax) return undefined;
  return { policy, deployments: biggest.deployments, from: biggest.poolMax, to };
}

/** "raise max_connections to N", said the way that works for this server and policy. */
function raiseAdvice(facts: Facts, pg: Reachable, n: number): string {
  const value = Math.min(n, MAX_CONNECTIONS_MAX);
  const policy = facts.subject.policy;
  // Patroni, under Zalando's operator, pins it on the command line: a policy sets it through the owner all the same.
  const owner = policy ? facts.policy?.restartedBy : undefined;
  if (pg.settingSource === "command line" && !owner) {
    return `raise max_connections to ${value} where the server's command line sets it (e.g. Patroni's postgresql.parameters): ALTER SYSTEM cannot override it`;
  }
  const desired = facts.policy?.maxConnections;
  if (policy && desired === "auto") {
    const ceiling = facts.budget?.ceiling;
    return ceiling !== undefined && value > ceiling
      ? `raise max_connections to ${value}: spec.postgres.maxConnections of ${policy} is "auto" but spec.budget.ceiling (${ceiling}) caps it; raise the ceiling to at least ${value}`
      : `raise max_connections to ${value} (spec.postgres.maxConnections of ${policy} is "auto": see its MaxConnectionsApplied condition for why it is not there yet)`;
  }
  if (policy && owner)
    return `raise max_connections to ${value} (set spec.postgres.maxConnections of ${policy} to ${value}: the operator sets it on ${facts.policy?.restartWorkload} and ${owner} restarts the instances)`;
  if (policy)
    return `raise max_connections to ${value} (set spec.postgres.maxConnections of ${policy} to ${value}: the operator applies it with one rolling restart)`;
  return `raise max_connections to ${value} (ALTER SYSTEM SET max_connections = ${value}, then restart PostgreSQL)`;
}

function unreachableAdvice(reason: string): string | undefined {
  switch (reason) {
    case "TooManyConnections":
      return "the server is full: diagnose it with a role that owns a reserved slot (a superuser, or pg_use_reserved_connections on PostgreSQL 16+), e.g. the PoolPolicy's credentials, to see who holds the slots";
    case "AuthenticationFailed":
      return "check the user and password (for a PoolPolicy: the Secret named in spec.postgres.credentialsSecret)";
    case "ConnectionRefused":
    case "HostNotFound":
    case "Timeout":
      return "check that PostgreSQL runs and is reachable from here; from outside the cluster, use kubectl port-forward and --pg-host/--pg-port";
    case "SecretNotFound":
    case "SecretKeyMissing":
      return "create the Secret (and keys) named in spec.postgres.credentialsSecret";
    case "DatabaseNotFound":
      return "check spec.postgres.database (or the database of --dsn)";
    default:
      return undefined;
  }
}

export function quoteIdent(name: string): string {
  return /^[a-z_][a-z0-9_]*$/.test(name) ? name : `"${name.replaceAll('"', '""')}"`;
}
