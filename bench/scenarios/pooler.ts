/**
 * 9. Pooler: pgbench direct against through the PgBouncer the operator sizes (issue 17), at the
 * same server connection count.
 *
 * One PostgreSQL (the harness's) with pgbench's tables (`pgbench -i`), and Debian's PgBouncer as
 * a process (test/harness/pgbouncer.ts) running the config the operator renders
 * (src/pooler/pgbouncer-config.ts) for a pooler of one pod sized by the operator's planner
 * (src/server/pooler-plan.ts) to S server connections. Each run is pgbench's TPC-B-like script for
 * the same number of seconds, every transaction's latency logged (`--log`):
 *
 *   direct S        S clients on S server connections: the baseline;
 *   session S       the same S clients through PgBouncer in session mode: what the hop costs;
 *   transaction 4S  4S clients through PgBouncer in transaction mode, still S server connections:
 *                   what folding clients onto the share gives;
 *   direct 4S       the same 4S clients straight to the server: what they cost without the pooler
 *                   (4S server connections).
 *
 * While the pooled runs go, the server's connections to the database are sampled every 100 ms
 * from pg_stat_activity: the promise is that they never exceed S.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { type PgBouncerConfigInput, renderPgBouncerConfig } from "../../src/pooler/pgbouncer-config.js";
import { type PoolerSizing, planPooler } from "../../src/server/pooler-plan.js";
import { PgBouncerProcess } from "../../test/harness/pgbouncer.js";
import { freePort } from "../../test/harness/ports.js";
import { postgresBinDir } from "../../test/harness/postgres.js";
import { APP_DATABASE, startPostgres, type BenchPostgres } from "../lib/postgres.js";
import type { ScenarioResult } from "../lib/report.js";
import type { Ctx } from "../lib/settings.js";
import { fmtMs, fmtRatio, percentile } from "../lib/stats.js";

const run = promisify(execFile);

/** Server connections the pooler gets, and the direct baseline uses. */
const SHARE = 20;
/** Clients folded onto the share in the transaction-mode run. */
const FOLDED = 4 * SHARE;

interface PgbenchRun {
  label: string;
  clients: number;
  tps: number;
  failed: number;
  /** Every transaction's latency, ms. */
  latencies: number[];
  /** The most server connections to the app database seen while it ran (pooled runs). */
  serverConnections?: number;
}

/** The operator's planner for one pooler pod (no surge) with `share` server connections. */
function sizing(share: number, clients: number, server: string): PoolerSizing {
  const reserved = 5;
  const plan = planPooler(
    {
      maxConnections: share + reserved,
      reserved,
      direct: 0,
      throughPooler: clients,
      pods: { replicas: 1, strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 0 } } },
      databases: 1,
      minServerConnectionsPerPod: 1,
      reservePoolSize: 0,
    },
    server,
  );
  if (plan.kind !== "sized") throw new Error(plan.message);
  return plan;
}

async function startBouncer(
  pgs: BenchPostgres,
  mode: PgBouncerConfigInput["poolMode"],
  clients: number,
): Promise<PgBouncerProcess> {
  const { server } = pgs;
  const port = await freePort();
  return PgBouncerProcess.start(port, { user: server.superuser, password: server.password }, ({ authFile }) => {
    const config = renderPgBouncerConfig({
      target: { ...server.connection, database: APP_DATABASE, sslMode: "disable" },
      databases: [APP_DATABASE],
      sizing: sizing(SHARE, clients, `127.0.0.1:${server.port}`),
      poolMode: mode,
      listen: { address: "127.0.0.1", port },
      authFile,
    });
    if (!config.ok) throw new Error(config.message);
    return config;
  });
}

/** The most connections to the app database (other than our own) while `during` runs, sampled every 100 ms. */
async function peakServerConnections<T>(pgs: BenchPostgres, during: Promise<T>): Promise<{ result: T; peak: number }> {
  const admin = await pgs.admin();
  let peak = 0;
  let done = false;
  const sampler = (async () => {
    while (!done) {
      const { rows } = await admin.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
        [APP_DATABASE],
      );
      peak = Math.max(peak, rows[0].n);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  try {
    const result = await during;
    return { result, peak };
  } finally {
    done = true;
    await sampler;
    await admin.end();
  }
}

async function pgbench(
  pgs: BenchPostgres,
  label: string,
  port: number,
  clients: number,
  seconds: number,
): Promise<PgbenchRun> {
  const dir = mkdtempSync(join(tmpdir(), "poolpolicy-pgbench-"));
  try {
    const args = ["-h", "127.0.0.1", "-p", String(port), "-U", pgs.server.superuser, "-n"];
    args.push("-c", String(clients), "-j", "2", "-T", String(seconds), "--log", `--log-prefix=${join(dir, "tx")}`);
    const { stdout } = await run(join(postgresBinDir(), "pgbench"), [...args, APP_DATABASE], {
      env: { ...process.env, PGPASSWORD: pgs.server.password },
      maxBuffer: 16 * 1024 * 1024,
    });
    const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)?.[1]);
    const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0);
    if (!Number.isFinite(tps)) throw new Error(`pgbench printed no tps:\n${stdout}`);
    // One line per transaction: client_id transaction_no time script_no time_epoch time_us (time: µs).
    const latencies = readdirSync(dir).flatMap((f) =>
      readFileSync(join(dir, f), "utf8")
        .split("\n")
        .filter(Boolean)
        .map((line) => Number(line.split(" ")[2]) / 1000),
    );
    return { label, clients, tps, failed, latencies };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function pooler(ctx: Ctx): Promise<ScenarioResult> {
  const started = performance.now();
  const { seconds, scale } = ctx.settings.pooler;
  const pgs = await startPostgres({ conf: { max_connections: FOLDED + 20 } });
  const runs: PgbenchRun[] = [];
  try {
    const bin = join(postgresBinDir(), "pgbench");
    const env = { ...process.env, PGPASSWORD: pgs.server.password };
    const connection = ["-h", "127.0.0.1", "-p", String(pgs.server.port), "-U", pgs.server.superuser];
    await run(bin, ["-i", "-q", "-s", String(scale), ...connection, APP_DATABASE], { env });
    ctx.log(`pgbench -i -s ${scale} done; ${seconds} s per run`);

    runs.push(await pgbench(pgs, `direct, ${SHARE} clients`, pgs.server.port, SHARE, seconds));
    for (const [mode, clients] of [
      ["Session", SHARE],
      ["Transaction", FOLDED],
    ] as const) {
      const bouncer = await startBouncer(pgs, mode, clients);
      try {
        const label = `through PgBouncer (${mode.toLowerCase()} mode), ${clients} clients`;
        const { result, peak } = await peakServerConnections(pgs, pgbench(pgs, label, bouncer.port, clients, seconds));
        runs.push({ ...result, serverConnections: peak });
      } finally {
        await bouncer.stop();
      }
    }
    runs.push(await pgbench(pgs, `direct, ${FOLDED} clients`, pgs.server.port, FOLDED, seconds));
    for (const r of runs) {
      ctx.log(`${r.label}: ${r.tps.toFixed(0)} tps, p99 ${fmtMs(percentile(r.latencies, 99))}, failed ${r.failed}`);
    }
  } finally {
    await pgs.destroy();
  }

  const [direct, session, folded, directMany] = runs as [PgbenchRun, PgbenchRun, PgbenchRun, PgbenchRun];
  const p99 = (r: PgbenchRun) => percentile(r.latencies, 99);
  const pooledPeak = Math.max(session.serverConnections ?? 0, folded.serverConnections ?? 0);
  return {
    id: "pooler",
    title: "9. Pooler",
    method: [
      `pgbench's TPC-B-like script (scale ${scale}, ${seconds} s a run, 2 threads, every transaction's latency logged) on one PostgreSQL, ` +
        `directly and through Debian's PgBouncer running the operator's rendered config for one pod sized by its planner to ${SHARE} server connections.`,
      `Baseline: ${SHARE} clients straight to the server (${SHARE} server connections). Measured: the same ${SHARE} clients through PgBouncer ` +
        `in session mode (what the hop costs), and ${FOLDED} clients through it in transaction mode (folded onto the same ${SHARE}); ` +
        `for contrast, ${FOLDED} clients straight to the server.`,
      "Server connections to the database sampled from pg_stat_activity every 100 ms during the pooled runs.",
    ],
    checks: [
      {
        what: `throughput, ${SHARE} clients through PgBouncer (session) vs direct`,
        measured: `${session.tps.toFixed(0)} tps`,
        baseline: `${direct.tps.toFixed(0)} tps`,
        ratio: fmtRatio(session.tps / direct.tps),
        goal: "— (the hop's cost)",
        met: null,
      },
      {
        what: `p99 latency, ${SHARE} clients through PgBouncer (session) vs direct`,
        measured: fmtMs(p99(session)),
        baseline: fmtMs(p99(direct)),
        ratio: fmtRatio(p99(session) / p99(direct)),
        goal: "— (the hop's cost)",
        met: null,
      },
      {
        what: `throughput, ${FOLDED} clients folded onto ${SHARE} server connections (transaction) vs ${SHARE} direct`,
        measured: `${folded.tps.toFixed(0)} tps`,
        baseline: `${direct.tps.toFixed(0)} tps`,
        ratio: fmtRatio(folded.tps / direct.tps),
        goal: "—",
        met: null,
      },
      {
        what: `p99 latency, ${FOLDED} clients folded onto ${SHARE} (transaction) vs ${SHARE} direct`,
        measured: fmtMs(p99(folded)),
        baseline: fmtMs(p99(direct)),
        ratio: fmtRatio(p99(folded) / p99(direct)),
        goal: "— (clients queue for a server connection)",
        met: null,
      },
      {
        what: "server connections of the pooled runs (peak) vs the pooler's share",
        measured: String(pooledPeak),
        baseline: String(SHARE),
        ratio: fmtRatio(pooledPeak / SHARE),
        goal: `≤ ${SHARE}, no failed transaction`,
        met: pooledPeak <= SHARE && session.failed === 0 && folded.failed === 0,
      },
    ],
    tables: [
      {
        title: "pgbench runs",
        columns: ["run", "clients", "server connections", "tps", "p50", "p99", "failed"],
        rows: runs.map((r) => [
          r.label,
          String(r.clients),
          r.serverConnections !== undefined ? `${r.serverConnections} (peak)` : String(r.clients),
          r.tps.toFixed(0),
          fmtMs(percentile(r.latencies, 50)),
          fmtMs(p99(r)),
          String(r.failed),
        ]),
      },
    ],
    notes: [
      `${FOLDED} clients straight to the server: ${directMany.tps.toFixed(0)} tps, p99 ${fmtMs(p99(directMany))}, on ${FOLDED} server connections; ` +
        `folded through the pooler: ${folded.tps.toFixed(0)} tps, p99 ${fmtMs(p99(folded))}, on at most ${folded.serverConnections}.`,
      "pgbench, PgBouncer and PostgreSQL share the machine's 2 cores: PgBouncer is one process on one core, so on a larger machine the hop costs less than here.",
    ],
    durationMs: performance.now() - started,
    raw: runs.map(({ latencies, ...r }) => ({ ...r, transactions: latencies.length, p99: p99({ ...r, latencies }) })),
  };
}
