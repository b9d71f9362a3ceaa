/**
 * 5. Event storm: R spec updates per second spread over P policies for S seconds (four in five
 * change the reaper's excluded applications, one in five the pool size, which re-applies the
 * env to the policy's Deployments). Measured: the work queue's own latency histogram
 * (workqueue_queue_duration_seconds, the delta over the storm), reconciles of one key in flight
 * at the same time (the in-process probe wraps the controller's reconcile function), and end to
 * end, from the update's send to the moment the bench's watch sees status.observedGeneration
 * reach it. Baseline, same run: how long the API server takes to show the same update to a
 * watcher (the bench's watch seeing metadata.generation change): the raw event delivery.
 *
 */
import type { PoolPolicy } from "../../src/api/schema.js";
import {
  createDeployments,
  createNamespace,
  createPolicy,
  patchPolicy,
  policyWatch,
  startCluster,
  waitDeploymentsSettled,
  waitPoliciesReady,
  type Cluster,
} from "../lib/cluster.js";
import { BenchOperator, type ProbeState } from "../lib/operator.js";
import {
  createCredentialsSecret,
  maxConnectionsFor,
  policySpec,
  POOL,
  startPostgres,
  type BenchPostgres,
} from "../lib/postgres.js";
import {
  histogramDelta,
  histogramOf,
  histogramQuantile,
  histogramQuantileBound,
  sumBy,
  type Histogram,
} from "../lib/prom.js";
import type { ScenarioResult } from "../lib/report.js";
import type { Ctx } from "../lib/settings.js";
import { fmtMs, fmtRatio, median, percentile } from "../lib/stats.js";
import { waitFor } from "../../test/harness/processes.js";
import { waitQuiet } from "./steady.js";

const GROUP_LABEL = "bench.pooling.dbops.io/group";
const PER_POLICY = 5;

interface Update {
  policy: string;
  sentAt: number;
  generation: number;
  seenAt?: number;
  observedAt?: number;
}

interface StormResult {
  updates: number;
  stormMs: number;
  caughtUpMs: number;
  e2e: number[];
  delivery: number[];
  queue: Histogram;
  work: Histogram;
  reconciles: string;
  probe: ProbeState;
}

export async function storm(ctx: Ctx): Promise<ScenarioResult> {
  const { settings } = ctx;
  const started = performance.now();
  const P = settings.stormPolicies;
  const cluster = await startCluster();
  const pgs = await startPostgres({ conf: { max_connections: maxConnectionsFor(P * PER_POLICY, settings.replicas) } });
  const operator = new BenchOperator(cluster.cp.kubeconfigPath, settings.logDir, "storm", {
    WORKERS: String(settings.workers),
  });
  let result: StormResult;
  try {
    result = await runStorm(ctx, cluster, pgs, operator, "storm");
  } finally {
    await operator.stop().catch(() => undefined);
    await pgs.destroy().catch(() => undefined);
    await cluster.stop().catch(() => undefined);
  }

  const p99 = histogramQuantile(result.queue, 0.99);
  const conflicts = result.probe.responsesByStatus["409"] ?? 0;
  const requestsPerReconcile =
    Object.values(result.probe.requests).reduce((a, b) => a + b, 0) / Math.max(result.probe.reconciles, 1);
  const checks: ScenarioResult["checks"] = [
    {
      what: `5. storm, ${settings.stormRatePerSecond}/s × ${settings.stormSeconds} s over ${P} policies: work-queue latency p99`,
      measured: `${fmtMs(p99 * 1000)} (≤ ${fmtMs(histogramQuantileBound(result.queue, 0.99) * 1000)} bucket; p50 ${fmtMs(histogramQuantile(result.queue, 0.5) * 1000)}; ${result.queue.count} keys handed out)`,
      baseline: "—",
      ratio: "—",
      goal: "p99 ≤ 1 s",
      met: Number.isFinite(p99) ? p99 <= 1 : null,
    },
    {
      what: "5. storm: reconciles of one key in flight at the same time",
      measured: `at most ${result.probe.maxConcurrentPerKey} (${result.probe.overlaps} overlaps in ${result.probe.reconciles} reconciles)`,
      baseline: "—",
      ratio: "—",
      goal: "never 2",
      met: result.probe.controllerWrapped && result.probe.maxConcurrentPerKey <= 1 && result.probe.overlaps === 0,
    },
    {
      what: "5. storm: update sent → status.observedGeneration shows it (p99)",
      measured: `${fmtMs(percentile(result.e2e, 99))} (p50 ${fmtMs(median(result.e2e))})`,
      baseline: `${fmtMs(percentile(result.delivery, 99))} p99 (p50 ${fmtMs(median(result.delivery))}): the API server showing the update to a watch`,
      ratio: fmtRatio(percentile(result.e2e, 99) / percentile(result.delivery, 99)),
      goal: "—",
      met: null,
    },
  ];
  return {
    id: "storm",
    title: "5. Event storm",
    method: [
      `${P} PoolPolicies, each selecting ${PER_POLICY} Deployments (replicas ${settings.replicas}), all on one PostgreSQL server; ${settings.stormRatePerSecond} merge patches per second for ${settings.stormSeconds} s, round-robin over the policies: four in five change spec.reaper.excludeApplicationNames, one in five spec.pool.maxSize (the env is re-applied to the policy's Deployments).`,
      "Queue latency is the operator's workqueue_queue_duration_seconds histogram (delta over the storm, quantiles interpolated inside buckets that double from 1 ms); concurrency per key is counted by wrapping the controller's reconcile function inside the operator process (bench/lib/operator-probe.mjs): a key counts as in flight from the call of reconcile(key) until its promise settles.",
    ],
    checks,
    tables: [
      {
        columns: [
          "updates sent",
          "reconciles (by result)",
          "API requests per reconcile",
          "work per reconcile p50 / p99",
          "API writes refused with 409",
          "queue p50 / p99",
          "update → observedGeneration p50 / p99",
          "last update → every policy caught up",
        ],
        rows: [
          [
            `${result.updates} in ${(result.stormMs / 1000).toFixed(1)} s`,
            `${result.probe.reconciles} (${result.reconciles})`,
            requestsPerReconcile.toFixed(1),
            `${fmtMs(histogramQuantile(result.work, 0.5) * 1000)} / ${fmtMs(histogramQuantile(result.work, 0.99) * 1000)}`,
            String(conflicts),
            `${fmtMs(histogramQuantile(result.queue, 0.5) * 1000)} / ${fmtMs(p99 * 1000)}`,
            `${fmtMs(median(result.e2e))} / ${fmtMs(percentile(result.e2e, 99))}`,
            fmtMs(result.caughtUpMs),
          ],
        ],
      },
    ],
    notes: result.probe.controllerWrapped
      ? []
      : [
          `The reconcile probe was not installed (${result.probe.wrapError ?? "unknown"}): the concurrency check has no data.`,
        ],
    durationMs: performance.now() - started,
    raw: { ...result, probe: { ...result.probe, reconcileMs: undefined, writes: undefined } },
  };
}

async function runStorm(
  ctx: Ctx,
  cluster: Cluster,
  pgs: BenchPostgres,
  operator: BenchOperator,
  ns: string,
): Promise<StormResult> {
  const { settings } = ctx;
  const P = settings.stormPolicies;
  const rate = settings.stormRatePerSecond;
  const seconds = settings.stormSeconds;
  await createNamespace(cluster, ns);
  await createCredentialsSecret(cluster, ns, pgs);
  await createDeployments(cluster, ns, {
    prefix: "app",
    to: P * PER_POLICY,
    replicas: settings.replicas,
    labels: (i) => ({ [GROUP_LABEL]: `g${i % P}` }),
  });
  await waitDeploymentsSettled(cluster, ns, P * PER_POLICY);
  for (let j = 0; j < P; j++)
    await createPolicy(
      cluster,
      ns,
      `p${j}`,
      policySpec(pgs, { targets: { selector: { matchLabels: { [GROUP_LABEL]: `g${j}` } } } }),
    );
  await operator.start();
  await waitPoliciesReady(cluster, ns, P);
  await waitQuiet(operator);

  // The bench's watch: when each generation first shows, and when the status first reports it.
  const updates: Update[] = [];
  const seen: Array<{ policy: string; generation: number; observed: number; at: number }> = [];
  const watch = policyWatch(cluster, ns, (_type, p: PoolPolicy, at) => {
    seen.push({
      policy: p.metadata.name,
      generation: p.metadata.generation ?? 0,
      observed: p.status?.observedGeneration ?? 0,
      at,
    });
  });
  await watch.start();

  const before = await operator.metrics();
  await operator.reset();
  ctx.log(`storm: ${rate} updates/s for ${seconds} s over ${P} policies`);
  const total = rate * seconds;
  const t0 = performance.now();
  const sends: Array<Promise<void>> = [];
  for (let k = 0; k < total; k++) {
    const due = t0 + (k * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const policy = `p${k % P}`;
    const round = Math.floor(k / P);
    const patch =
      round % 5 === 4
        ? { spec: { pool: { maxSize: POOL.maxSize + ((Math.floor(round / 5) + 1) % 2) } } }
        : { spec: { reaper: { excludeApplicationNames: [`storm-${k}`] } } };
    const sentAt = performance.now();
    sends.push(
      patchPolicy(cluster, ns, policy, patch).then(
        (p) => void updates.push({ policy, sentAt, generation: p.metadata.generation ?? 0 }),
      ),
    );
  }
  await Promise.all(sends);
  const stormMs = performance.now() - t0;
  const lastGeneration = new Map<string, number>();
  for (const u of updates) lastGeneration.set(u.policy, Math.max(lastGeneration.get(u.policy) ?? 0, u.generation));
  await waitFor(
    "every policy to report its last generation",
    () => [...lastGeneration].every(([policy, g]) => seen.some((e) => e.policy === policy && e.observed >= g)),
    {
      timeoutMs: 300_000,
      intervalMs: 200,
    },
  );
  const caughtUpMs = performance.now() - t0 - stormMs;
  watch.stop();
  const after = await operator.metrics();
  const probe = await operator.probe();

  for (const u of updates) {
    u.seenAt = seen.find((e) => e.policy === u.policy && e.generation >= u.generation)?.at;
    u.observedAt = seen.find((e) => e.policy === u.policy && e.observed >= u.generation)?.at;
  }
  const name = { name: "poolpolicy" };
  const results = sumBy(after, "controller_runtime_reconcile_total", "result");
  const resultsBefore = sumBy(before, "controller_runtime_reconcile_total", "result");
  const result: StormResult = {
    updates: updates.length,
    stormMs,
    caughtUpMs,
    e2e: updates.filter((u) => u.observedAt !== undefined).map((u) => u.observedAt! - u.sentAt),
    delivery: updates.filter((u) => u.seenAt !== undefined).map((u) => u.seenAt! - u.sentAt),
    queue: histogramDelta(
      histogramOf(before, "workqueue_queue_duration_seconds", name),
      histogramOf(after, "workqueue_queue_duration_seconds", name),
    ),
    work: histogramDelta(
      histogramOf(before, "workqueue_work_duration_seconds", name),
      histogramOf(after, "workqueue_work_duration_seconds", name),
    ),
    reconciles: Object.entries(results)
      .map(([k, v]) => `${k} ${v - (resultsBefore[k] ?? 0)}`)
      .join(", "),
    probe,
  };
  ctx.log(
    `storm: queue p99 ${fmtMs(histogramQuantile(result.queue, 0.99) * 1000)}, update → observed p99 ${fmtMs(percentile(result.e2e, 99))}, 409s ${probe.responsesByStatus["409"] ?? 0}`,
  );
  return result;
}
