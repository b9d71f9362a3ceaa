/**
 * 2. Steady state: P policies over D Deployments, converged; then a window (10 minutes at full
 * scale) that includes at least two informer resyncs, in which every API request the operator
 * sends is counted inside its process (operator-probe.mjs), every write the kube-apiserver
 * serves is counted on the server side (apiserver_request_total, all clients), and every SQL
 * statement of the operator's login is counted by pg_stat_statements.
 */
import {
  apiserverMetrics,
  apiserverWrites,
  createDeployments,
  createNamespace,
  createPolicy,
  startCluster,
  waitDeploymentsSettled,
  waitPoliciesReady,
} from "../lib/cluster.js";
import { BenchOperator, readsOf, total, writesOf } from "../lib/operator.js";
import {
  createCredentialsSecret,
  maxConnectionsFor,
  OPERATOR_ROLE,
  policySpec,
  startPostgres,
} from "../lib/postgres.js";
import { sumBy, sumOf, type Sample } from "../lib/prom.js";
import type { ScenarioResult } from "../lib/report.js";
import type { Ctx } from "../lib/settings.js";
import { fmtBytes, sleep } from "../lib/stats.js";

const GROUP_LABEL = "bench.pooling.dbops.io/group";

/** The operator's read-only health and statistics queries (src/postgres/inspect.ts), excluded as the issue says. */
const HEALTH_AND_STATS: Array<[string, RegExp]> = [
  ["settings (inspect.ts SETTINGS_SQL)", /FROM pg_settings s WHERE s\.name = /],
  ["may read config files (has_table_privilege)", /has_table_privilege\(/],
  ["ALTER SYSTEM value (pg_file_settings)", /FROM pg_file_settings f/],
  ["connection counts (pg_stat_activity)", /FROM pg_stat_activity WHERE backend_type = /],
  ["extensions", /pg_available_extensions/],
];
const REAPER = /pg_terminate_backend/;
const SQL_WRITE =
  /^\s*(ALTER|SET|RESET|CREATE|DROP|INSERT|UPDATE|DELETE|GRANT|REVOKE|TRUNCATE|COPY|SELECT\s+pg_reload_conf|SELECT\s+pg_terminate_backend)/i;

interface StatementRow {
  query: string;
  calls: number;
  total_ms: number;
}

export async function steady(ctx: Ctx): Promise<ScenarioResult> {
  const { settings } = ctx;
  const started = performance.now();
  const P = settings.steadyPolicies;
  const D = settings.steadyDeployments;
  const windowS = settings.steadySeconds;
  const resyncS = Math.max(5, Math.min(300, Math.floor(windowS / 2.5)));
  const cluster = await startCluster();
  const pgs = await startPostgres({
    statements: true,
    conf: { max_connections: maxConnectionsFor(D, settings.replicas) },
  });
  const operator = new BenchOperator(cluster.cp.kubeconfigPath, settings.logDir, "steady", {
    WORKERS: String(settings.workers),
    RESYNC_SECONDS: String(resyncS),
  });
  try {
    const ns = await createNamespace(cluster, "steady");
    await createCredentialsSecret(cluster, ns, pgs);
    ctx.log(`creating ${D} Deployments and ${P} policies`);
    await createDeployments(cluster, ns, {
      prefix: "app",
      to: D,
      replicas: settings.replicas,
      labels: (i) => ({ [GROUP_LABEL]: `g${i % P}` }),
    });
    await waitDeploymentsSettled(cluster, ns, D);
    for (let j = 0; j < P; j++) {
      await createPolicy(
        cluster,
        ns,
        `p${j}`,
        policySpec(pgs, { targets: { selector: { matchLabels: { [GROUP_LABEL]: `g${j}` } } } }),
      );
    }
    const t0 = performance.now();
    await operator.start();
    await waitPoliciesReady(cluster, ns, P);
    const convergedMs = performance.now() - t0;
    ctx.log(`converged in ${(convergedMs / 1000).toFixed(1)} s; waiting for the status writes to stop`);
    await waitQuiet(operator);

    const admin = await pgs.admin();
    await admin.query("SELECT pg_stat_statements_reset()");
    await operator.reset();
    // Live heap after a full GC at both ends of the window: growth there would be a leak.
    const before = await operator.gc();
    const apiBefore = await apiserverMetrics(cluster);
    const opBefore = await operator.metrics();
    ctx.log(`window of ${windowS} s (informer resync every ${resyncS} s)`);
    const windowStart = performance.now();
    for (let left = windowS; left > 0; left -= 60) {
      await sleep(Math.min(60, left) * 1000);
      if (left > 60) ctx.log(`  ${windowS - left + 60} s of ${windowS} s`);
    }
    const windowMs = performance.now() - windowStart;
    const probe = await operator.probe();
    const after = await operator.gc();
    const opAfter = await operator.metrics();
    const apiAfter = await apiserverMetrics(cluster);
    const statements = (
      await admin.query<StatementRow>(
        `SELECT s.query, s.calls::int AS calls, s.total_exec_time::float8 AS total_ms
           FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
          WHERE r.rolname = $1 ORDER BY s.calls DESC`,
        [OPERATOR_ROLE],
      )
    ).rows;
    await admin.end();

    const writes = writesOf(probe.requests);
    const reads = readsOf(probe.requests);
    const delta = (name: string, match: Record<string, string> = {}) =>
      sumOf(opAfter, name, match) - sumOf(opBefore, name, match);
    const reconcilesByResult = diff(
      sumBy(opBefore, "controller_runtime_reconcile_total", "result"),
      sumBy(opAfter, "controller_runtime_reconcile_total", "result"),
    );
    const reconciles = total(reconcilesByResult);
    const statusWrites = delta("poolpolicy_status_writes_total");
    const events = delta("events_recorded_total");
    const reaped = delta("poolpolicy_reaper_sessions_terminated_total");
    const serverWrites = apiserverWrites(apiBefore, apiAfter);
    const operatorKinds = /^(\S+) (poolpolicies|deployments|events|secrets|statefulsets|pods)(\/status)?$/;
    const serverWritesOnOperatorKinds = Object.entries(serverWrites).filter(
      ([k]) => operatorKinds.test(k) && !/^\S+ (deployments|statefulsets|pods)\/status$/.test(k) && !/ pods$/.test(k),
    );

    const classified = statements.map((s) => {
      const health = HEALTH_AND_STATS.find(([, re]) => re.test(s.query));
      const kind = health
        ? `health/stats: ${health[0]}`
        : REAPER.test(s.query)
          ? "reaper pass (one statement: select + terminate)"
          : "other";
      const write = !health && !REAPER.test(s.query) && SQL_WRITE.test(s.query);
      return { ...s, kind, write };
    });
    const sqlOther = classified.filter((s) => !s.kind.startsWith("health/stats"));
    const sqlWrites = classified.filter((s) => s.write).reduce((a, s) => a + s.calls, 0);
    const apiWrites = total(writes);
    const minutes = windowMs / 60_000;

    const checks: ScenarioResult["checks"] = [
      {
        what: `2. steady state, ${P} policies / ${D} Deployments, ${(windowMs / 60_000).toFixed(1)} min: API writes`,
        measured: `${apiWrites} by the operator (its own count); ${serverWritesOnOperatorKinds.reduce((a, [, v]) => a + v, 0)} on the kinds it writes, server-side`,
        baseline: "0",
        ratio: "—",
        goal: "0 writes",
        met: apiWrites === 0,
      },
      {
        what: "2. steady state: SQL statements besides health/stats reads",
        measured: `${sqlOther.reduce((a, s) => a + s.calls, 0)} (reaper passes, ${reaped} sessions terminated); ${sqlWrites} writes`,
        baseline: "0",
        ratio: "—",
        goal: "0 writes",
        met: sqlWrites === 0 && reaped === 0,
      },
    ];
    const notes = [
      `Converged (every policy Ready) ${(convergedMs / 1000).toFixed(1)} s after the operator started; the window began once the status writes had stopped for 10 s.`,
      `In the window: ${reconciles} reconciles (${Object.entries(reconcilesByResult)
        .map(([k, v]) => `${k} ${v}`)
        .join(
          ", ",
        )}), ${(reconciles / P / minutes).toFixed(2)} per policy per minute; status writes ${statusWrites}; Events ${events}; reconciles of one key in flight at once: at most ${probe.maxConcurrentPerKey}.`,
      `API reads by the operator in the window: ${total(reads)} (${(total(reads) / Math.max(reconciles, 1)).toFixed(1)} per reconcile; ${(total(reads) / (windowMs / 1000)).toFixed(1)} per second): ${Object.entries(
        reads,
      )
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}.`,
      `The operator opened ${probe.connects} new connections to the API server in the window (it keeps them: src/runtime/kube-config.ts). Its live heap after a full GC went from ${fmtBytes(before.memory.heapUsed)} to ${fmtBytes(after.memory.heapUsed)} over the window, its RSS from ${fmtBytes(before.memory.rss)} to ${fmtBytes(after.memory.rss)} (under tsx, as the tests run it; the memory scenario measures the compiled operator).`,
      `Writes the kube-apiserver served in the window, all clients (the controller-manager, scheduler and kwok write too): ${
        Object.entries(serverWrites)
          .sort((a, b) => b[1] - a[1])
          .map(([k, v]) => `${k} ${v}`)
          .join(", ") || "none"
      }.`,
    ];
    if (apiWrites > 0)
      notes.push(
        `The operator's writes: ${probe.writes
          .slice(0, 20)
          .map((w) => `${w.verb} ${w.path}`)
          .join("; ")}.`,
      );
    return {
      id: "steady",
      title: "2. Steady state",
      method: [
        `${P} PoolPolicies in one namespace, each selecting ${D / P} of ${D} Deployments (replicas ${settings.replicas}), all on one PostgreSQL server; default reaper (every 60 s, 5 min timeout); STATS_REFRESH_SECONDS=30, RESYNC_SECONDS=${resyncS} so that the window holds at least two resyncs of every informer.`,
        "API requests are counted inside the operator process (undici's diagnostics channel, bench/lib/operator-probe.mjs) and cross-checked with the kube-apiserver's apiserver_request_total; SQL by pg_stat_statements, for the operator's own login only.",
      ],
      checks,
      tables: [
        {
          title: "SQL statements of the operator's login in the window (pg_stat_statements)",
          columns: ["statement", "kind", "calls", "calls/min", "mean time"],
          rows: classified.map((s) => [
            s.query.replace(/\s+/g, " ").slice(0, 90) + (s.query.length > 90 ? "…" : ""),
            s.write ? `${s.kind} (WRITE)` : s.kind,
            String(s.calls),
            (s.calls / minutes).toFixed(1),
            `${(s.total_ms / Math.max(s.calls, 1)).toFixed(2)} ms`,
          ]),
        },
      ],
      notes,
      durationMs: performance.now() - started,
      raw: {
        windowMs,
        convergedMs,
        requests: probe.requests,
        writes: probe.writes,
        reconcilesByResult,
        statusWrites,
        events,
        reaped,
        serverWrites,
        statements: classified,
      },
    };
  } finally {
    await operator.stop().catch(() => undefined);
    await pgs.destroy().catch(() => undefined);
    await cluster.stop().catch(() => undefined);
  }
}

function diff(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

/** Waits until the operator's status-write and reconcile-error counters stand still for 10 s (at most 3 min). */
export async function waitQuiet(operator: BenchOperator, quietMs = 10_000, maxMs = 180_000): Promise<void> {
  const deadline = performance.now() + maxMs;
  const signature = (s: Sample[]) =>
    `${sumOf(s, "poolpolicy_status_writes_total")}/${sumOf(s, "events_recorded_total")}`;
  let last = signature(await operator.metrics());
  let since = performance.now();
  while (performance.now() < deadline) {
    await sleep(1000);
    const now = signature(await operator.metrics());
    if (now !== last) {
      last = now;
      since = performance.now();
    } else if (performance.now() - since >= quietMs) {
      return;
    }
  }
}
