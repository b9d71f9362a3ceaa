/**
 * 3. Memory: the operator's heap (after a full GC) and RSS once synced, with 100, 1,000 and
 * 5,000 Deployments in the cluster, a fifth of them selected by the policies. The operator is
 * started afresh for each size, so RSS is that of a process that synced at this size, not the
 * high-water mark of the previous ones. Baselines in the same run: the same operator with no
 * policy and no Deployment (its fixed cost), and the size of a watched Deployment as the API
 * serves it (JSON bytes).
 */
import {
  createDeployments,
  createNamespace,
  createPolicy,
  listPolicies,
  patchPolicy,
  startCluster,
  waitDeploymentsSettled,
  waitPoliciesReady,
} from "../lib/cluster.js";
import { BenchOperator, type GcResult } from "../lib/operator.js";
import { createCredentialsSecret, maxConnectionsFor, policySpec, POOL, startPostgres } from "../lib/postgres.js";
import { sumOf } from "../lib/prom.js";
import type { ScenarioResult } from "../lib/report.js";
import type { Ctx } from "../lib/settings.js";
import { fmtBytes, fmtRatio, mean, sleep } from "../lib/stats.js";
import { waitFor } from "../../test/harness/processes.js";
import { waitQuiet } from "./steady.js";

const GROUP_LABEL = "bench.pooling.dbops.io/group";
const HEAP_GOAL = 10 * 1024;
const RSS_GOAL = 200 * 1024 * 1024;

interface Point {
  deployments: number;
  watched: number;
  heapUsed: number;
  /** Read 3 s after the second forced GC. */
  rss: number;
  rssRightAfterGc: number;
  /** V8's heap as reserved (it gives memory back to the OS slowly), and memory outside it. */
  heapTotal: number;
  external: number;
  mallocedMemory: number;
  /** New connections to the API server from start to measurement (the probe's count). */
  connects: number;
  smaps?: GcResult["smaps"];
  /** prom-client's view, scraped after the GC. */
  promHeapUsed: number;
  promRss: number;
  syncMs: number;
}

export async function memory(ctx: Ctx): Promise<ScenarioResult> {
  const { settings } = ctx;
  const started = performance.now();
  const P = settings.memoryPolicies;
  const groups = P * 5; // a fifth of the Deployments match
  const cluster = await startCluster();
  const pgs = await startPostgres({
    conf: { max_connections: maxConnectionsFor(Math.max(...settings.memoryN) / 5, settings.replicas) },
  });
  // Compiled and run by plain node, as the container image runs it: under tsx, the loader's own
  // thread and the TypeScript transform hold about 150 MiB of RSS that production never has.
  const operator = new BenchOperator(
    cluster.cp.kubeconfigPath,
    settings.logDir,
    "memory",
    { WORKERS: String(settings.workers) },
    "compiled",
  );
  const points: Point[] = [];
  const variants: Array<{ label: string; point: Point }> = [];
  let base: Point | undefined;
  let jsonBytes = Number.NaN;
  let jsonBytesWithoutManagedFields = Number.NaN;
  try {
    const ns = await createNamespace(cluster, "memory");
    await createCredentialsSecret(cluster, ns, pgs);

    // The fixed cost: the operator with nothing to watch but PoolPolicies.
    base = await measure(operator, 0, 0, 0);
    ctx.log(`baseline (no policy, no Deployment): heap ${fmtBytes(base.heapUsed)}, RSS ${fmtBytes(base.rss)}`);

    for (let j = 0; j < P; j++) {
      await createPolicy(
        cluster,
        ns,
        `p${j}`,
        policySpec(pgs, { targets: { selector: { matchLabels: { [GROUP_LABEL]: `g${j}` } } } }),
      );
    }
    let created = 0;
    for (const n of [...settings.memoryN].sort((a, b) => a - b)) {
      ctx.log(`creating Deployments ${created}…${n - 1}`);
      await createDeployments(cluster, ns, {
        prefix: "app",
        from: created,
        to: n,
        replicas: settings.replicas,
        labels: (i) => ({ [GROUP_LABEL]: `g${i % groups}` }),
      });
      created = n;
      await waitDeploymentsSettled(cluster, ns, n);
      const watched = Array.from({ length: n }, (_, i) => i % groups).filter((g) => g < P).length;
      const t0 = performance.now();
      await operator.start();
      // Synced: every policy reports all its Deployments injected and rolled out.
      await waitFor(
        `${P} policies to report ${watched} Deployments injected`,
        async () => {
          const policies = await listPolicies(cluster, ns);
          const done = policies
            .map((p) => /^(\d+)\/(\d+)$/.exec(p.status?.targetsSummary ?? ""))
            .filter((m) => m && m[1] === m[2]);
          return done.reduce((a, m) => a + Number(m![1]), 0) === watched;
        },
        { timeoutMs: 900_000, intervalMs: 1000 },
      );
      const syncMs = performance.now() - t0;
      await waitQuiet(operator);
      await sleep(2000);
      const point = await measure(operator, n, watched, syncMs, true);
      points.push(point);
      ctx.log(
        `${n} Deployments (${watched} watched): heap ${fmtBytes(point.heapUsed)}, RSS ${fmtBytes(point.rss)}, synced in ${(syncMs / 1000).toFixed(1)} s`,
      );
      if (n === Math.max(...settings.memoryN)) {
        // The size of a watched Deployment as the API serves it (JSON, managedFields included).
        const raw = JSON.parse(
          await cluster.cp.adminGet(
            `/apis/apps/v1/namespaces/${ns}/deployments?labelSelector=${encodeURIComponent(`${GROUP_LABEL}=g0`)}`,
          ),
        ) as { items: unknown[] };
        jsonBytes = mean(raw.items.map((d) => JSON.stringify(d).length));
        jsonBytesWithoutManagedFields = mean(
          raw.items.map(
            (d) =>
              JSON.stringify({
                ...(d as object),
                metadata: { ...(d as { metadata: object }).metadata, managedFields: undefined },
              }).length,
          ),
        );
        ctx.log(`a watched Deployment is ${fmtBytes(jsonBytes)} of JSON (${raw.items.length} sampled)`);
      }
      await operator.stop();
    }
    // At the largest size, the same work once more with a pool change that every watched
    // Deployment must receive: a start that patches all of them, the operator's busiest start.
    const largestN = Math.max(...settings.memoryN);
    const watchedLargest = points.at(-1)!.watched;
    const variantsToRun: Array<{ label: string; env: Record<string, string>; maxSize: number }> = !settings.extras
      ? []
      : [{ label: "pool change re-applied to every watched Deployment", env: {}, maxSize: POOL.maxSize + 1 }];
    for (const v of variantsToRun) {
      for (let j = 0; j < P; j++) await patchPolicy(cluster, ns, `p${j}`, { spec: { pool: { maxSize: v.maxSize } } });
      const t0 = performance.now();
      await operator.start(v.env);
      await waitPoliciesReady(cluster, ns, P, 900_000);
      const syncMs = performance.now() - t0;
      await waitQuiet(operator);
      await sleep(2000);
      const point = await measure(operator, largestN, watchedLargest, syncMs, true);
      variants.push({ label: v.label, point });
      ctx.log(
        `${largestN} Deployments, ${v.label}: heap ${fmtBytes(point.heapUsed)}, RSS ${fmtBytes(point.rss)}, ${point.connects} new API connections`,
      );
      await operator.stop();
    }
  } finally {
    await operator.stop().catch(() => undefined);
    await pgs.destroy().catch(() => undefined);
    await cluster.stop().catch(() => undefined);
  }

  const b = base!;
  const largest = points.at(-1)!;
  const perWatched = (p: Point) => (p.heapUsed - b.heapUsed) / Math.max(p.watched, 1);
  const slope =
    points.length >= 2
      ? (largest.heapUsed - points[0]!.heapUsed) / Math.max(largest.watched - points[0]!.watched, 1)
      : Number.NaN;
  const cells = (p: Point) => [
    fmtBytes(p.heapUsed),
    fmtBytes(p.heapTotal),
    fmtBytes(p.external),
    fmtBytes(p.rss),
    p.smaps ? `${fmtBytes(p.smaps.brkHeap)} / ${fmtBytes(p.smaps.anonymous)} / ${fmtBytes(p.smaps.files)}` : "",
    String(p.connects),
  ];
  const rows = [
    ["0 (no policy)", "0", ...cells(b), "", "", ""],
    ...points.map((p, i) => {
      const prev = points[i - 1];
      const marginal = prev ? (p.heapUsed - prev.heapUsed) / Math.max(p.watched - prev.watched, 1) : Number.NaN;
      return [
        String(p.deployments),
        String(p.watched),
        ...cells(p),
        fmtBytes(perWatched(p)),
        prev ? fmtBytes(marginal) : "",
        `${(p.syncMs / 1000).toFixed(1)} s`,
      ];
    }),
    ...variants.map((v) => [
      `${v.point.deployments}, ${v.label}`,
      String(v.point.watched),
      ...cells(v.point),
      fmtBytes(perWatched(v.point)),
      "",
      `${(v.point.syncMs / 1000).toFixed(1)} s`,
    ]),
  ];
  const smallest = points[0]!;
  // The headline: what one more watched Deployment costs, from the smallest to the largest size
  // (fixed costs such as modules loaded on the first reconcile, the PostgreSQL pool and the
  // per-policy informers cancel out). The absolute figure, fixed costs included, is in the table.
  const headline = points.length >= 2 ? slope : perWatched(largest);
  const heapMet = headline <= HEAP_GOAL;
  const rssMet = largest.rss < RSS_GOAL;
  return {
    id: "memory",
    title: "3. Memory",
    method: [
      `${P} PoolPolicies each selecting one label group; Deployments (replicas ${settings.replicas}) spread over ${groups} groups, so a fifth of them are watched.`,
      "The operator is compiled to JavaScript (bench/tsconfig.operator.json) and run by plain node, as the container image runs it; for each size it is started afresh and waits until every policy reports all its Deployments injected and its status writes have stopped, then the benchmark forces full garbage collections in it (bench/lib/operator-probe.mjs), twice 3 s apart, and reads process.memoryUsage() 3 s later: heapUsed is the live heap, RSS the resident set; /proc/self/smaps splits RSS into the C heap, anonymous maps (V8's pages, large buffers) and files.",
      `Heap per watched Deployment = the heap's growth from the smallest size (${smallest.deployments} Deployments, ${smallest.watched} watched) to the largest, divided by the growth in watched Deployments: fixed costs cancel out. Baselines in the same run: the same operator with no policy and no Deployment, and the JSON size of one watched Deployment as the API serves it.`,
    ],
    checks: [
      {
        what:
          points.length >= 2
            ? `3. memory: heap per watched Deployment, ${smallest.deployments} → ${largest.deployments} Deployments (${smallest.watched} → ${largest.watched} watched)`
            : `3. memory: heap per watched Deployment at ${largest.deployments} Deployments (${largest.watched} watched), from the empty operator`,
        measured: fmtBytes(headline),
        baseline: Number.isFinite(jsonBytes) ? `${fmtBytes(jsonBytes)} (JSON of one Deployment)` : "—",
        ratio: Number.isFinite(jsonBytes) ? fmtRatio(headline / jsonBytes) : "—",
        goal: "≤ 10 KiB",
        met: heapMet,
      },
      {
        what: `3. memory: RSS at ${largest.deployments} Deployments`,
        measured: fmtBytes(largest.rss),
        baseline: `${fmtBytes(b.rss)} (no policy, no Deployment)`,
        ratio: fmtRatio(largest.rss / b.rss),
        goal: "< 200 MiB",
        met: rssMet,
      },
    ],
    tables: [
      {
        columns: [
          "Deployments in the cluster",
          "watched",
          "heap used (after GC)",
          "V8 heap reserved",
          "external",
          "RSS",
          "RSS: C heap / anonymous maps / files",
          "new API connections since start",
          "heap per watched Deployment (from the empty operator)",
          "marginal, from the previous size",
          "start → synced",
        ],
        rows,
      },
    ],
    notes: [
      `Heap per watched Deployment counted from the empty operator (fixed costs included) at the largest size: ${fmtBytes(perWatched(largest))}.`,
      `A watched Deployment is ${fmtBytes(jsonBytes)} of JSON, ${fmtBytes(jsonBytesWithoutManagedFields)} without metadata.managedFields. One Deployment informer per namespace (src/controller/target-watches.ts) caches every Deployment of the namespace, watched or not, as a lean copy (name, labels, versions, replicas, strategy, containers' names and env, rollout counters); the budget and the env injection read them there instead of listing. So the heap per watched Deployment includes the four unwatched ones per watched one here.`,
      ...rssNotes(b, largest),
      `prom-client's gauges at the largest size (scraped right after the GC): nodejs_heap_size_used_bytes ${fmtBytes(largest.promHeapUsed)}, process_resident_memory_bytes ${fmtBytes(largest.promRss)}.`,
    ],
    durationMs: performance.now() - started,
    raw: { base, points, variants, jsonBytes, jsonBytesWithoutManagedFields },
  };
}

async function measure(
  operator: BenchOperator,
  deployments: number,
  watched: number,
  syncMs: number,
  running = false,
): Promise<Point> {
  if (!running) {
    await operator.start();
    await sleep(3000);
  }
  // Two full GCs, then time for V8 to hand freed pages back (its unmapper works in the
  // background after a GC), then the same again, and RSS read a few seconds later.
  await operator.gc();
  await sleep(3000);
  const gc: GcResult = await operator.gc();
  await sleep(3000);
  const metrics = await operator.metrics();
  const probe = await operator.probe();
  if (!running) await operator.stop();
  return {
    deployments,
    watched,
    heapUsed: gc.memory.heapUsed,
    rss: probe.memory.rss,
    rssRightAfterGc: gc.memory.rss,
    heapTotal: gc.memory.heapTotal,
    external: gc.memory.external,
    mallocedMemory: gc.heap.malloced_memory,
    connects: probe.connects,
    smaps: gc.smaps,
    promHeapUsed: sumOf(metrics, "nodejs_heap_size_used_bytes"),
    promRss: sumOf(metrics, "process_resident_memory_bytes"),
    syncMs,
  };
}

/** What the RSS is made of, from the numbers of this run. */
function rssNotes(empty: Point, largest: Point): string[] {
  const notes = [
    `The floor: the operator with no policy is already ${fmtBytes(empty.rss)} of RSS (a bare node process is about 45 MiB; importing @kubernetes/client-node alone brings a bare node process to about 125 MiB: its generated API and model classes), so the 200 MiB goal leaves about ${fmtBytes(200 * 1024 * 1024 - empty.rss)} for everything else.`,
  ];
  if (largest.smaps) {
    notes.push(
      `At ${largest.deployments} Deployments the live JS heap is ${fmtBytes(largest.heapUsed)} (V8 reserves ${fmtBytes(largest.heapTotal)}), but RSS is ${fmtBytes(largest.rss)}: C heap ${fmtBytes(largest.smaps.brkHeap)}, anonymous maps ${fmtBytes(largest.smaps.anonymous)} (of which ${fmtBytes(largest.smaps.anonymousBySize?.["256KiB-1MiB"] ?? 0)} in 256 KiB–1 MiB maps: V8 pages and large strings freed after the peaks of a sync, still resident), files ${fmtBytes(largest.smaps.files)}.`,
    );
  }
  return notes;
}
