/**
 * The human side of the CLI: plain-text tables in kubectl's style (upper-case headers,
 * left-aligned columns three spaces apart), no colours, so the output reads the same in a
 * terminal, a CI log and a ticket. Scripts use --json instead of parsing this.
 */
import { formatDuration } from "../api/duration.js";
import { formatBytes } from "../server/memory.js";
import { describeLimit, type RoleLimitPlan } from "../server/role-limits.js";
import { quoteIdent } from "./findings.js";
import type { DiagnoseReport, Finding, PoolerSection } from "./report.js";
import type { ReapReport } from "./reap.js";

/** Rows under upper-case headers, columns padded to their widest cell. */
export function table(
  headers: readonly string[],
  rows: readonly (readonly (string | number)[])[],
  indent = "  ",
): string {
  const cells = [headers.map(String), ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return `${cells
    .map(
      (r) =>
        indent +
        r
          .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!)))
          .join("   ")
          .trimEnd(),
    )
    .join("\n")}\n`;
}

/** "key   value" lines, the keys padded to the longest. */
export function keyValues(rows: readonly (readonly [string, string])[], indent = "  "): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${indent}${k.padEnd(width)}   ${v}\n`).join("");
}

/** Seconds as "1h2m3s"; "0s" under a second. */
export function age(seconds: number): string {
  return seconds < 1 ? "0s" : formatDuration(Math.round(seconds) * 1000);
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

const SEVERITY_LABEL: Record<Finding["severity"], string> = {
  critical: "CRITICAL",
  warning: "WARNING",
  notice: "NOTICE",
};

export function renderDiagnose(r: DiagnoseReport): string {
  const out: string[] = [];
  const s = r.subject;
  out.push(s.policy ? `PoolPolicy ${s.policy}: ${s.user}@${s.server}/${s.database}\n\n` : `${s.dsn}\n\n`);

  const pg = r.postgres;
  out.push("POSTGRESQL\n");
  if (!pg.reachable) {
    out.push(`  unreachable (${pg.reason}): ${pg.message}\n`);
  } else {
    const c = pg.connections;
    const pending = pg.pendingRestart
      ? `restart pending${pg.alterSystemValue !== undefined ? `: ${pg.alterSystemValue} after it` : ""}`
      : "no restart pending";
    out.push(
      keyValues([
        ["version", pg.version],
        ["max_connections", `${pg.maxConnections} (source: ${pg.settingSource}; ${pending})`],
        [
          "reserved slots",
          `${pg.superuserReservedConnections} superuser_reserved_connections + ${pg.reservedConnections} reserved_connections`,
        ],
        [
          "in use",
          `${c.total}/${pg.maxConnections} (${pg.usagePercent}%): ${c.active} active, ${c.idle} idle, ${c.idleInTransaction} idle in transaction`,
        ],
        ["free for apps", `${Math.max(0, pg.ordinarySlotsFree)} slot(s) for roles without a reserved slot`],
      ]),
    );
  }

  const sessions = r.sessions;
  if (sessions) {
    out.push("\nCONNECTIONS BY DATABASE\n");
    out.push(
      table(
        ["DATABASE", "TOTAL", "ACTIVE", "IDLE", "IDLE IN TX", "OTHER"],
        sessions.byDatabase.map((d) => [
          d.database || "(none)",
          d.total,
          d.active,
          d.idle,
          d.idleInTransaction,
          d.other,
        ]),
      ),
    );
    out.push("\nCONNECTIONS BY USER AND APPLICATION\n");
    out.push(
      table(
        ["USER", "APPLICATION", "DATABASE", "TOTAL", "ACTIVE", "IDLE", "IDLE IN TX", "OTHER"],
        sessions.byUserAndApplication.map((g) => [
          g.user || "?",
          g.applicationName || "(none)",
          g.database || "(none)",
          g.total,
          g.active,
          g.idle,
          g.idleInTransaction,
          g.other,
        ]),
      ),
    );
    out.push(
      `\nOLDEST IDLE IN TRANSACTION (${sessions.idleInTransactionOverThreshold} longer than ${sessions.idleThreshold})\n`,
    );
    out.push(
      sessions.oldestIdleInTransaction.length === 0
        ? "  none\n"
        : table(
            ["PID", "IDLE", "USER", "APPLICATION", "CLIENT", "DATABASE", "QUERY"],
            sessions.oldestIdleInTransaction.map((x) => [
              x.pid,
              age(x.idleSeconds),
              x.user || "?",
              x.applicationName || "(none)",
              x.clientAddress ?? "local",
              x.database,
              truncate(x.query, 60),
            ]),
          ),
    );
  }

  const b = r.budget;
  if (b) {
    out.push(`\nBUDGET ON ${b.server} (${b.policies.length} PoolPolic${b.policies.length === 1 ? "y" : "ies"})\n`);
    out.push(
      b.targets.length === 0
        ? "  no target Deployments\n"
        : table(
            ["POLICY", "DEPLOYMENT", "POOL MAX", "PODS (WORST CASE)", "CONNECTIONS"],
            b.targets.map((t) => [t.policy, t.deployment, t.poolMax, t.podsWorstCase, t.connections]),
          ),
    );
    const rs = b.reserve;
    out.push(
      `  reserve    ${rs.total} (${rs.superuserReserved} superuser_reserved + ${rs.reserved} reserved_connections + ${rs.operator} operator + ${rs.extra} spec.budget.reserve)\n`,
    );
    out.push(
      `  demand     ${b.demand} of capacity ${b.capacity}: ${b.withinLimits ? "within limits" : `${b.demand - b.capacity} over`}\n`,
    );
    const m = b.memory;
    if (m) {
      out.push(
        m.known
          ? `  memory     ceiling ${m.ceiling} max_connections: ${m.source}, ${formatBytes(m.fixedBytes)} fixed + ${formatBytes(m.perConnectionBytes)} per connection\n`
          : `  memory     ceiling unknown: ${m.message}\n`,
      );
    }
    const p = b.pooler;
    if (p) out.push(`  pooler     ${poolerLine(p)}\n`);
    for (const note of b.notes) out.push(`  note: ${note}\n`);
  }

  const roles = r.roles;
  if (roles && roles.length > 0) {
    out.push("\nROLES HELD TO THEIR SHARE (spec.enforcement.connectionLimit)\n");
    out.push(
      table(
        ["ROLE", "SHARE", "DEMAND + MARGIN", "CONNECTION LIMIT", "SESSIONS", "THE OPERATOR", "POLICIES"],
        roles.map((x) => [
          quoteIdent(x.role),
          x.share.limit,
          `${x.share.demand} + ${x.share.margin}`,
          x.exists ? describeLimit(x.connectionLimit) : "(no such role)",
          x.connections,
          planInWords(x.plan),
          x.share.policies.join(", "),
        ]),
      ),
    );
  }

  const e = r.extensions;
  if (e) {
    out.push(`\nEXTENSIONS IN ${e.database}\n`);
    out.push(
      table(
        ["EXTENSION", "STATE"],
        e.required.map((name) => {
          const m = e.missing.find((x) => x.name === name);
          return [
            name,
            !m
              ? "installed"
              : m.availableOnServer
                ? "missing (available: CREATE EXTENSION)"
                : "missing (not available on the server)",
          ];
        }),
      ),
    );
  }

  const redis = r.redis;
  if (redis) {
    out.push(`\nREDIS (${redis.required ? "required" : "optional"})\n`);
    out.push(
      redis.available
        ? `  PING ok; clients ${redis.connectedClients}/${redis.maxClients}; ${redis.rejectedConnections} rejected since start\n`
        : `  unavailable (${redis.reason}): ${redis.message}\n`,
    );
  }

  out.push("\nFINDINGS\n");
  if (r.findings.length === 0) out.push("  none: nothing wrong found\n");
  for (const f of r.findings) {
    out.push(`  ${SEVERITY_LABEL[f.severity].padEnd(8)}  ${f.code}: ${f.message}\n`);
    if (f.recommendation) out.push(`  ${"".padEnd(8)}  → ${f.recommendation}\n`);
  }
  out.push(`\n${r.ok ? "OK" : "PROBLEMS FOUND"}\n`);
  return out.join("");
}

/** What the operator does about a role's limit, in a table cell. */
function planInWords(plan: RoleLimitPlan): string {
  switch (plan.kind) {
    case "inForce":
      return "keeps it";
    case "change":
      return plan.direction === "raise" ? `raises it to ${plan.limit}` : `lowers it to ${plan.limit} after rollout`;
    case "refused":
      return `refuses: ${plan.reason}`;
  }
}

export function renderReap(r: ReapReport): string {
  const where = r.subject.policy
    ? `PoolPolicy ${r.subject.policy} (${r.subject.user}@${r.subject.server}/${r.subject.database})`
    : `${r.subject.dsn}`;
  const n = r.sessions.length;
  const head = r.dryRun
    ? `Dry run on ${where}: ${n} session(s) idle in transaction for more than ${r.olderThan} would be terminated${n > 0 ? "; pass --execute to terminate them" : ""}.\n`
    : `${where}: terminated ${r.terminated} of ${n} session(s) idle in transaction for more than ${r.olderThan}.\n`;
  const rows = r.sessions.map((x) => [
    x.pid,
    age(x.idleSeconds),
    x.user ?? "?",
    x.applicationName || "(none)",
    x.clientAddress ?? "local",
    r.dryRun ? "would terminate" : x.terminated ? "terminated" : "already gone",
  ]);
  const excluded = `Never touched: other databases, our own session, users [${r.excludeUsers.join(", ")}], applications [${r.excludeApplicationNames.join(", ")}].\n`;
  return head + (n > 0 ? table(["PID", "IDLE", "USER", "APPLICATION", "CLIENT", "ACTION"], rows) : "") + excluded;
}

/** The pooler in one line: its sizes, or why it does not run; and whose apps go through it. */
function poolerLine(p: PoolerSection): string {
  const through = p.pooled.length > 0 ? ` (through it: ${p.pooled.join(", ")})` : "";
  switch (p.state) {
    case "sized":
      return `${p.name}: ${p.explanation}${through}`;
    case "refused":
      return `${p.name} does not fit: ${p.message}${through}`;
    default:
      return p.message;
  }
}
