/**
 * 7. Many policies on one server (issue 13): P PoolPolicies × 5 Deployments each, all pointing
 * at one PostgreSQL, against one policy fanning out to the same P × 5 Deployments, in the same
 * run. Measured for each: the time from the operator's start to every policy Ready, and the
 * operator's RSS and live heap once converged and quiet; plus the size of a policy's status
 * (every client that lists or watches PoolPolicies reads it).
 *
 * The operator is compiled and run by plain node, as in the image (and as the memory scenario
 * runs it), and started after the policies exist, so both sides pay the same start-up.
 */
import {
  createDeployments,
  createNamespace,
  createPolicy,
  forceDeletePolicy,
  listPolicies,
  startCluster,
  waitDeploymentsSettled,
  waitPoliciesReady,
} from "../lib/cluster.js";
import { join } from "node:path";
import { BenchOperator, compileOperator, type GcResult } from "../lib/operator.js";
import { summarizeProfile } from "../lib/profile.js";
import { createCredentialsSecret, maxConnectionsFor, policySpec, startPostgres } from "../lib/postgres.js";
import type { ScenarioResult } from "../lib/report.js";
import type { Ctx } from "../lib/settings.js";
import { fmtBytes, fmtRatio, sleep } from "../lib/stats.js";
import { waitQuiet } from "./steady.js";
import { HEAP_PAGES_DEFAULTS } from "../../src/runtime/heap-pages.js";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { load } from "js-yaml";
import { parseMemoryQuantity } from "../../src/api/quantity.js";

const GROUP_LABEL = "bench.pooling.dbops.io/group";
const ALL_LABEL = "bench.pooling.dbops.io/all";
const PER_POLICY = 5;
/** Issue 13's goal: all Ready within twice the time of one policy over the same Deployments. */
const TIME_GOAL = 2;
/** Half the chart's default memory limit (charts/.../values.yaml), the goal at 1,000 policies. */
const RSS_GOAL = chartMemoryLimit() / 2;

function chartMemoryLimit(): number {
  const file = fileURLToPath(new URL("../../charts/poolpolicy-operator/values.yaml", import.meta.url));
  const values = load(readFileSync(file, "utf8")) as { resources?: { limits?: { memory?: string } } };
  const limit = parseMemoryQuantity(values.resources?.limits?.memory ?? "");
  if (limit === undefined) throw new Error(`${file}: resources.limits.memory is not a memory quantity`);
  return limit;
}

interface Side {
  readyMs: number;
  /** The operator's CPU time (user + system) from its start to all Ready. */
  cpuMs: number;
  /** Reconciles (passes) from the operator's start to all Ready. */
  passes: number;
  /** Resident memory by kind of mapping after the GCs (C heap, anonymous maps: V8 pages, malloc arenas; files). */
  smaps?: GcResult["smaps"];
  /** Deployments in the policies' status.targets, all policies together. */
  targets: number;
  /** RSS once settled (75 s after quiet: the heap give-back has run). */
  rss: number;
  /** RSS right after the quiet time and two GCs. */
  rssQuiet: number;
  /** Peak RSS of the whole run (VmHWM): what a memory limit meets first. */
  peakRss: number;
  heapUsed: number;
  /** JSON bytes of one policy as the API serves it (the largest), and of the list of all. */
  policyBytes: number;
  listBytes: number;
}

interface Point {
  policies: number;
  deployments: number;
  one: Side;
  many: Side;
}

export async function many(ctx: Ctx): Promise<ScenarioResult> {
  const { settings } = ctx;
  const started = performance.now();
  const sizes = [...settings.manyPolicies].sort((a, b) => a - b);
  // Compiled before any clock runs: the first start() would compile, inside the first side's time.
  compileOperator();
  const cluster = await startCluster();
  const pgs = await startPostgres({
    conf: { max_connections: maxConnectionsFor(Math.max(...sizes) * PER_POLICY, settings.replicas) },
  });
  const operator = new BenchOperator(
    cluster.cp.kubeconfigPath,
    settings.logDir,
    "many",
    { WORKERS: String(settings.workers) },
    "compiled",
  );
  const points: Point[] = [];
  try {
    for (const P of sizes) {
      const ns = await createNamespace(cluster, `many-${P}`);
      await createCredentialsSecret(cluster, ns, pgs);
      const n = P * PER_POLICY;
      ctx.log(`${P} policies: creating ${n} Deployments`);
      await createDeployments(cluster, ns, {
        prefix: "app",
        to: n,
        replicas: settings.replicas,
        labels: (i) => ({ [GROUP_LABEL]: `g${Math.floor(i / PER_POLICY)}`, [ALL_LABEL]: "yes" }),
      });
      await waitDeploymentsSettled(cluster, ns, n);

      // Baseline: one policy over all of them. Its pool differs from the many policies' so that
      // each side patches every Deployment once.
      // The selector is set whole, not merged into policySpec's default (group=g0): merged, the
      // baseline selected g0's 5 Deployments only, and the runs before 2026-12-01 05:00 compared
      // 200 policies with one policy over 5 Deployments.
      const fan = {
        ...policySpec(pgs, { pool: { maxSize: 2 } }),
        targets: { selector: { matchLabels: { [ALL_LABEL]: "yes" } } },
      };
      await createPolicy(cluster, ns, "fan", fan);
      const one = await converge(ctx, operator, cluster, ns, 1, n, `many-${P}-one`);
      await forceDeletePolicy(cluster, ns, "fan");

      for (let j = 0; j < P; j++) {
        await createPolicy(
          cluster,
          ns,
          `p${j}`,
          policySpec(pgs, { targets: { selector: { matchLabels: { [GROUP_LABEL]: `g${j}` } } }, pool: { maxSize: 3 } }),
        );
      }
      const manySide = await converge(ctx, operator, cluster, ns, P, n, `many-${P}-many`);
      for (let j = 0; j < P; j++) await forceDeletePolicy(cluster, ns, `p${j}`);
      await cluster.core.deleteNamespace({ name: ns }).catch(() => undefined);
      points.push({ policies: P, deployments: n, one, many: manySide });
      ctx.log(
        `${P} policies × ${PER_POLICY}: all Ready in ${(manySide.readyMs / 1000).toFixed(1)} s (one policy: ${(one.readyMs / 1000).toFixed(1)} s); RSS ${fmtBytes(manySide.rss)} (one policy: ${fmtBytes(one.rss)})`,
      );
    }
  } finally {
    await operator.stop().catch(() => undefined);
    await pgs.destroy().catch(() => undefined);
    await cluster.stop().catch(() => undefined);
  }

  const checks = points.flatMap((p) => [
    {
      what: `7. many policies, ${p.policies} × ${PER_POLICY} Deployments on one server: operator start → all Ready`,
      measured: `${(p.many.readyMs / 1000).toFixed(1)} s`,
      baseline: `${(p.one.readyMs / 1000).toFixed(1)} s (one policy over the same ${p.deployments} Deployments)`,
      ratio: fmtRatio(p.many.readyMs / p.one.readyMs),
      goal: `≤ ${TIME_GOAL}×`,
      met: p.many.readyMs <= TIME_GOAL * p.one.readyMs,
    },
    {
      what: `7. many policies, ${p.policies} × ${PER_POLICY}: RSS once converged and settled`,
      measured: `${fmtBytes(p.many.rss)} (peak ${fmtBytes(p.many.peakRss)}; ${fmtBytes(p.many.rssQuiet)} right after quiet)`,
      baseline: `${fmtBytes(p.one.rss)} (one policy over the same Deployments)`,
      ratio: fmtRatio(p.many.rss / p.one.rss),
      goal: p.policies >= 1000 ? `< ${fmtBytes(RSS_GOAL)} (half the chart's limit)` : "—",
      met: p.policies >= 1000 ? p.many.rss < RSS_GOAL : null,
    },
  ]);
  const side = (s: Side) => [
    `${(s.readyMs / 1000).toFixed(1)} s`,
    `${(s.cpuMs / 1000).toFixed(1)} s`,
    String(s.passes),
    fmtBytes(s.rss),
    fmtBytes(s.heapUsed),
    fmtBytes(s.policyBytes),
    fmtBytes(s.listBytes),
  ];
  return {
    id: "many",
    title: "7. Many policies on one server",
    method: [
      `P PoolPolicies (P = ${sizes.join(", ")}), each selecting its own ${PER_POLICY} Deployments (replicas ${settings.replicas}), all on one PostgreSQL server; the baseline in the same run is one policy selecting the same P × ${PER_POLICY} Deployments.`,
      "For each side the policies are created with the operator stopped, then the operator (compiled, plain node, as in the image) is started and the clock runs until every policy reports Ready=True for its generation. Once its status writes and Events have stopped for 10 s, two full GCs 3 s apart, RSS read 3 s later (as in the memory scenario) and again 75 s later, once the operator's heap give-back (src/runtime/heap-pages.ts) has had its chance: that settled figure is the one compared; the peak (VmHWM) is shown beside it.",
      "Policy sizes are the JSON the API server returns: the largest single policy, and the list of all of them. Operator CPU: its user + system time from its start to all Ready. Each side must list every Deployment in its policies' status.targets, or the scenario fails.",
      ...(settings.profile
        ? ["Run with BENCH_PROFILE=1: both sides under the CPU profiler (profiles in BENCH_LOG_DIR)."]
        : []),
    ],
    checks,
    tables: [
      {
        columns: [
          "policies × Deployments",
          "one policy: Ready",
          "operator CPU",
          "passes",
          "RSS",
          "heap",
          "policy JSON",
          "list JSON",
          "P policies: all Ready",
          "operator CPU",
          "passes",
          "RSS",
          "heap",
          "largest policy JSON",
          "list JSON",
        ],
        rows: points.map((p) => [`${p.policies} × ${PER_POLICY}`, ...side(p.one), ...side(p.many)]),
      },
    ],
    notes: [],
    durationMs: performance.now() - started,
    raw: points,
  };
}

/** Starts the operator over the policies of `ns`, waits for all Ready and quiet, measures, stops it. */
async function converge(
  ctx: Ctx,
  operator: BenchOperator,
  cluster: Awaited<ReturnType<typeof startCluster>>,
  ns: string,
  expected: number,
  deployments: number,
  name: string,
): Promise<Side> {
  const t0 = performance.now();
  await operator.start();
  if (ctx.settings.profile) await operator.profileStart();
  await waitPoliciesReady(cluster, ns, expected, 1_800_000);
  const readyMs = performance.now() - t0;
  const { cpu, reconciles } = await operator.probe();
  ctx.log(
    `${expected} polic${expected === 1 ? "y" : "ies"} Ready after ${(readyMs / 1000).toFixed(1)} s (operator CPU ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s, ${reconciles} passes)`,
  );
  if (ctx.settings.profile) {
    const file = join(ctx.settings.logDir, `${name}.cpuprofile`);
    await operator.profileStop(file);
    ctx.log(`  profile ${file}: ${summarizeProfile(file, 15).join("\n    ")}`);
  }
  await waitQuiet(operator, 10_000, 600_000);
  await operator.gc();
  await sleep(3000);
  const gc = await operator.gc();
  await sleep(3000);
  const probe = await operator.probe();
  // The operator's own give-back of V8's pooled pages (src/runtime/heap-pages.ts) may have run
  // during the quiet time: the RSS read above is after it, as a Pod's would be.
  const samples = await operator.metrics();
  const giveBacks = samples.find((m) => m.name === "poolpolicy_operator_heap_give_backs_total")?.value ?? 0;
  const givenBack = samples.find((m) => m.name === "poolpolicy_operator_heap_given_back_bytes_total")?.value ?? 0;
  ctx.log(`  heap pages given back: ${giveBacks} time(s), ${fmtBytes(givenBack)}`);
  // Once settled: the give-back samples every 15 s and runs at most once a minute, so the RSS
  // right after convergence may still hold the last minute's peak. A minute and a quarter later
  // it has had its chance, as it has in a Pod that runs on.
  await sleep(HEAP_PAGES_DEFAULTS.minIntervalMs + HEAP_PAGES_DEFAULTS.sampleMs);
  const settled = await operator.probe();
  ctx.log(
    `  RSS ${fmtBytes(probe.memory.rss)} once quiet, ${fmtBytes(settled.memory.rss)} 75 s later; peak ${fmtBytes(settled.peakRss ?? 0)}`,
  );
  const policies = await listPolicies(cluster, ns);
  await operator.stop();
  if (gc.smaps) {
    const { brkHeap, anonymous, files, anonymousBySize = {} } = gc.smaps;
    const bySize = Object.entries(anonymousBySize).map(([k, v]) => `${k} ${fmtBytes(v)}`);
    ctx.log(
      `  resident after GC: C heap ${fmtBytes(brkHeap)}, anonymous ${fmtBytes(anonymous)}, files ${fmtBytes(files)}; anonymous by mapping size: ${bySize.join(", ")}`,
    );
  }
  // Both sides must have patched the same Deployments, or the ratio compares different work.
  const targets = policies.reduce((sum, p) => sum + (p.status?.targets?.length ?? 0), 0);
  if (targets !== deployments) {
    throw new Error(`${name}: the policies' status lists ${targets} targets, the scenario made ${deployments}`);
  }
  return {
    readyMs,
    cpuMs: (cpu.user + cpu.system) / 1000,
    passes: reconciles,
    smaps: gc.smaps,
    targets,
    rss: settled.memory.rss,
    rssQuiet: probe.memory.rss,
    peakRss: settled.peakRss ?? 0,
    heapUsed: gc.memory.heapUsed,
    policyBytes: Math.max(...policies.map((p) => JSON.stringify(p).length)),
    listBytes: JSON.stringify(policies).length,
  };
}
