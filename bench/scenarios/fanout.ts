/**
 * 1. Fan-out: one policy selecting N Deployments; time from the policy's creation to the moment
 * the bench's own watch has seen every Deployment carry the pool env. Baseline, same run, same
 * control plane: a minimal client (lib/ssa-client.ts, its own process) sends the same N
 * server-side apply patches at the operator's concurrency for one policy (one reconcile patches
 * its Deployments one after another: 1), timed by the same watch; the raw limit is a plain
 * HTTPS client on a kept-alive connection, and the same patches through @kubernetes/client-node
 * (the operator's library) are measured too. Runs alternate baseline, operator, baseline, …;
 * each operator run is divided by the mean of the baseline runs on either side of it, so that
 * drift in the machine's load cancels out.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { V1Deployment } from "@kubernetes/client-node";
import { isInjected } from "../../src/controller/env-injection.js";
import { PATCHES_IN_FLIGHT } from "../../src/controller/targets.js";
import {
  createDeployments,
  createNamespace,
  createPolicy,
  deploymentWatch,
  forceDeletePolicy,
  startCluster,
  waitDeploymentsSettled,
  type Cluster,
} from "../lib/cluster.js";
import { BenchOperator, total, writesOf } from "../lib/operator.js";
import {
  createCredentialsSecret,
  maxConnectionsFor,
  policySpec,
  POOL,
  startPostgres,
  type BenchPostgres,
} from "../lib/postgres.js";
import { summarizeProfile } from "../lib/profile.js";
import type { ScenarioResult } from "../lib/report.js";
import type { Ctx } from "../lib/settings.js";
import { fmtMs, fmtRatio, mean, median, sleep } from "../lib/stats.js";

const GROUP_LABEL = "bench.pooling.dbops.io/group";
const ENV = [
  { name: "DB_POSTGRES_MIN_CONN", value: String(POOL.minSize) },
  { name: "DB_POSTGRES_MAX_CONN", value: String(POOL.maxSize) },
];
const ssaClient = fileURLToPath(new URL("../lib/ssa-client.ts", import.meta.url));

type Kind = "baseline-raw" | "baseline-client-node" | "operator" | "baseline-raw-parallel" | "operator-profiled";

interface Run {
  kind: Kind;
  n: number;
  ms: number;
  /** Baseline: the client's own time for its patch loop. */
  clientMs?: number;
  /** Operator: the API writes it sent until it went idle. */
  writes?: Record<string, number>;
  /** Operator: from the policy's create to its first patch, and its patch loop (probe clock). */
  setupMs?: number;
  loopMs?: number;
  /** Operator: requests and new connections to the API server in the run. */
  requests?: number;
  connects?: number;
  profile?: string[];
}

const LABEL: Record<Kind, string> = {
  "baseline-raw": "raw HTTPS client, kept-alive connection, 1 in flight",
  "baseline-client-node": "@kubernetes/client-node as shipped (a new connection per request), 1 in flight",
  operator: "operator",
  "baseline-raw-parallel": `baseline: raw HTTPS client, ${PATCHES_IN_FLIGHT} in flight (the operator's patches in flight)`,
  "operator-profiled": "operator, CPU-profiled (not counted)",
};

export async function fanout(ctx: Ctx): Promise<ScenarioResult> {
  const { settings } = ctx;
  const started = performance.now();
  const cluster = await startCluster();
  const pgs = await startPostgres({
    conf: { max_connections: maxConnectionsFor(Math.max(...settings.fanoutN), settings.replicas) },
  });
  const operator = new BenchOperator(cluster.cp.kubeconfigPath, settings.logDir, "fanout", {
    WORKERS: String(settings.workers),
  });
  const runs: Run[] = [];
  let nsCounter = 0;
  const notes: string[] = [];
  try {
    for (const n of settings.fanoutN) {
      const rounds = n > 300 ? settings.fanoutRoundsLarge : settings.fanoutRounds;
      // Every run gets fresh Deployments; all are created up front so that creating them
      // (and the Deployment controller's work on them) does not overlap any timed run.
      // Every operator run has a parallel-floor run on either side (the headline's ratio) and a
      // one-at-a-time run after that (the ratio earlier reports gave).
      const plan: Kind[] = settings.extras ? ["baseline-client-node", "baseline-raw"] : ["baseline-raw"];
      plan.push("baseline-raw-parallel");
      for (let r = 0; r < rounds; r++) plan.push("operator", "baseline-raw-parallel", "baseline-raw");
      if (settings.profile && n === Math.max(...settings.fanoutN)) plan.push("operator-profiled");
      ctx.log(`fan-out N=${n}: creating ${plan.length} × ${n} Deployments`);
      const namespaces: string[] = [];
      for (const _ of plan) {
        const ns = await createNamespace(cluster, `fanout-${n}-${nsCounter++}`);
        await createCredentialsSecret(cluster, ns, pgs);
        await createDeployments(cluster, ns, {
          prefix: "app",
          to: n,
          replicas: settings.replicas,
          labels: () => ({ [GROUP_LABEL]: "g0" }),
        });
        namespaces.push(ns);
      }
      for (const ns of namespaces) await waitDeploymentsSettled(cluster, ns, n);
      await sleep(2000);

      for (const [i, kind] of plan.entries()) {
        const ns = namespaces[i]!;
        const run = kind.startsWith("baseline")
          ? await baselineRun(ctx, cluster, ns, n, kind === "baseline-raw-parallel" ? PATCHES_IN_FLIGHT : 1, kind)
          : await operatorRun(ctx, cluster, pgs, operator, ns, n, kind);
        runs.push(run);
        ctx.log(`fan-out N=${n} ${kind}: ${fmtMs(run.ms)}`);
        await sleep(2000);
      }
    }
  } finally {
    await operator.stop().catch(() => undefined);
    await pgs.destroy().catch(() => undefined);
    await cluster.stop().catch(() => undefined);
  }

  const checks: ScenarioResult["checks"] = [];
  const rows: string[][] = [];
  /** Each operator run divided by the mean of the nearest `kind` runs before and after it. */
  const ratiosAgainst = (ofN: Run[], kind: Kind, of: Kind = "operator") =>
    ofN.flatMap((r, i) => {
      if (r.kind !== of) return [];
      const before = ofN
        .slice(0, i)
        .reverse()
        .find((x) => x.kind === kind);
      const after = ofN.slice(i + 1).find((x) => x.kind === kind);
      const around = [before, after].filter((x): x is Run => x !== undefined).map((x) => x.ms);
      return around.length > 0 ? [r.ms / mean(around)] : [];
    });
  for (const n of settings.fanoutN) {
    const ofN = runs.filter((r) => r.n === n);
    const ops = ofN.filter((r) => r.kind === "operator");
    const raw = ofN.filter((r) => r.kind === "baseline-raw");
    const lib = ofN.filter((r) => r.kind === "baseline-client-node");
    const parallel = ofN.filter((r) => r.kind === "baseline-raw-parallel");
    const vsParallel = ratiosAgainst(ofN, "baseline-raw-parallel");
    const vsRaw = ratiosAgainst(ofN, "baseline-raw");
    for (const r of ofN) {
      rows.push([
        String(n),
        LABEL[r.kind],
        fmtMs(r.ms),
        r.clientMs !== undefined
          ? fmtMs(r.clientMs)
          : r.setupMs !== undefined
            ? `${fmtMs(r.setupMs)} to the first patch, then ${fmtMs(r.loopMs ?? Number.NaN)}`
            : "",
        `${(r.ms / n).toFixed(1)} ms`,
        r.writes
          ? Object.entries(r.writes)
              .map(([k, v]) => `${k} ${v}`)
              .join(", ")
          : "",
        r.connects !== undefined ? `${r.connects} for ${r.requests} requests` : "",
      ]);
    }
    const runsText = (xs: number[]): string =>
      xs.length > 1 ? ` (runs: ${xs.map((x) => x.toFixed(2)).join(", ")})` : "";
    const measured = `${fmtMs(median(ops.map((r) => r.ms)))} (median of ${ops.length})`;
    checks.push({
      what: `1. fan-out N=${n}: apply → env in every Deployment, against the parallel floor`,
      measured,
      baseline: `${fmtMs(median(parallel.map((r) => r.ms)))} (raw HTTPS client, ${PATCHES_IN_FLIGHT} in flight)`,
      ratio: `${fmtRatio(median(vsParallel))}${runsText(vsParallel)}`,
      goal: "≤ 1.2×",
      met: Number.isFinite(median(vsParallel)) ? median(vsParallel) <= 1.2 : null,
    });
    checks.push({
      what: `1. fan-out N=${n}: the same, against one patch at a time (earlier reports' headline)`,
      measured,
      baseline: `${fmtMs(median(raw.map((r) => r.ms)))} (raw HTTPS client, 1 in flight)`,
      ratio: `${fmtRatio(median(vsRaw))}${runsText(vsRaw)}`,
      goal: "≤ 1.3×",
      met: Number.isFinite(median(vsRaw)) ? median(vsRaw) <= 1.3 : null,
    });
    if (lib.length > 0) {
      notes.push(
        `N=${n}: the same patches through @kubernetes/client-node as shipped, which opens a new TCP + TLS connection for every request (the operator keeps its connections: src/runtime/kube-config.ts), take ${fmtMs(median(lib.map((r) => r.ms)))}, ${fmtRatio(median(lib.map((r) => r.ms)) / median(raw.map((r) => r.ms)))} the raw client.`,
      );
    }
    if (parallel.length > 0) {
      notes.push(
        `N=${n}: the raw client takes ${fmtMs(median(parallel.map((r) => r.ms)))} with ${PATCHES_IN_FLIGHT} patches in flight (the operator's PATCHES_IN_FLIGHT for one policy) and ${fmtMs(median(raw.map((r) => r.ms)))} with one: ${fmtRatio(median(raw.map((r) => r.ms)) / median(parallel.map((r) => r.ms)))} faster in parallel.`,
      );
    }
    const writes = ops[0]?.writes ?? {};
    const opWrites = total(writes);
    if (opWrites > 0)
      notes.push(
        `N=${n}: API writes by the operator in its first run, until it went idle: ${opWrites} for ${n} Deployments (${(opWrites / n).toFixed(2)} per Deployment; the baseline sends 1.00).`,
      );
    const profiled = ofN.find((r) => r.kind === "operator-profiled");
    if (profiled?.profile)
      notes.push(
        `CPU profile of an extra, uncounted operator run at N=${n} (self time): ${profiled.profile.join("; ")}.`,
      );
  }
  return {
    id: "fanout",
    title: "1. Fan-out",
    method: [
      `One PoolPolicy selecting N Deployments (replicas ${settings.replicas}) in a namespace of their own; the clock starts when the bench sends the policy's create and stops when the bench's watch has seen the last Deployment carrying DB_POSTGRES_MIN_CONN/MAX_CONN.`,
      `The baseline is a minimal client in a process of its own (bench/lib/ssa-client.ts) sending the same server-side apply patches (same body, force, its own field manager) to fresh Deployments, timed by the same watch: a raw HTTPS client on kept-alive connections with ${PATCHES_IN_FLIGHT} patches in flight, as many as the operator keeps for one policy (the parallel floor, the headline's baseline), and the same client one patch at a time (the baseline of earlier reports); for comparison, @kubernetes/client-node.`,
      "Runs alternate; each operator run is divided by the mean of the nearest baseline runs of the same kind before and after it, and the ratio reported is the median over runs.",
      "The operator's time includes everything it does first: adding its finalizer, connecting to PostgreSQL, reading the server's facts and the budget, listing the targets.",
    ],
    checks,
    tables: [
      {
        columns: [
          "N",
          "run",
          "apply → env everywhere",
          "client's own loop (operator: setup, then patch loop)",
          "per Deployment",
          "operator's API writes (whole reconcile)",
          "new API connections",
        ],
        rows,
      },
    ],
    notes,
    durationMs: performance.now() - started,
    raw: { runs },
  };
}

/** Waits until the watch of `namespace` has seen all `n` Deployments injected; returns that time. */
async function watchUntilInjected(
  cluster: Cluster,
  namespace: string,
  n: number,
  start: () => Promise<number>,
  timeoutMs = 900_000,
): Promise<number> {
  const injected = new Set<string>();
  let doneAt = 0;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  const watch = deploymentWatch(cluster, namespace, (type, d: V1Deployment, at) => {
    const name = d.metadata!.name!;
    if (type !== "DELETED" && isInjected(d, ["app"], ENV)) injected.add(name);
    else injected.delete(name);
    if (injected.size >= n && doneAt === 0) {
      doneAt = at;
      resolveDone();
    }
  });
  await watch.start();
  if (injected.size > 0) throw new Error(`${namespace}: ${injected.size} Deployments already carry the env`);
  const t0 = await start();
  const timer = setTimeout(() => resolveDone(), timeoutMs);
  await done;
  clearTimeout(timer);
  watch.stop();
  if (doneAt === 0)
    throw new Error(`${namespace}: only ${injected.size}/${n} Deployments got the env within ${timeoutMs} ms`);
  return doneAt - t0;
}

async function baselineRun(
  ctx: Ctx,
  cluster: Cluster,
  namespace: string,
  n: number,
  concurrency: number,
  kind: Kind,
): Promise<Run> {
  const client = kind === "baseline-client-node" ? "client-node" : "raw";
  const child = spawn(process.execPath, ["--import", "tsx", ssaClient], {
    env: {
      ...process.env,
      KUBECONFIG: cluster.cp.kubeconfigPath,
      NAMESPACE: namespace,
      PREFIX: "app",
      COUNT: String(n),
      CONCURRENCY: String(concurrency),
      CLIENT: client,
      MIN_CONN: ENV[0]!.value,
      MAX_CONN: ENV[1]!.value,
    },
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.value !== "ready") throw new Error(`baseline client: expected "ready", got ${String(first.value)}`);
  let clientMs = 0;
  const ms = await watchUntilInjected(cluster, namespace, n, async () => {
    const t0 = performance.now();
    child.stdin!.write("go\n");
    void lines.next().then((r) => {
      if (r.value) clientMs = (JSON.parse(r.value) as { ms: number }).ms;
    });
    return t0;
  });
  await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once("exit", r)));
  ctx.log(`  baseline client loop ${fmtMs(clientMs)}`);
  return { kind, n, ms, clientMs };
}

async function operatorRun(
  ctx: Ctx,
  cluster: Cluster,
  pgs: BenchPostgres,
  operator: BenchOperator,
  namespace: string,
  n: number,
  kind: Kind,
): Promise<Run> {
  await operator.start();
  await sleep(1500);
  await operator.reset();
  const profileFile = join(ctx.settings.logDir, `fanout-${n}.cpuprofile`);
  if (kind === "operator-profiled") await operator.profileStart();
  let createdAt = 0;
  const ms = await watchUntilInjected(cluster, namespace, n, async () => {
    const t0 = performance.now();
    createdAt = Date.now();
    await createPolicy(
      cluster,
      namespace,
      "fanout",
      policySpec(pgs, { targets: { selector: { matchLabels: { [GROUP_LABEL]: "g0" } } } }),
    );
    return t0;
  });
  let profile: string[] | undefined;
  if (kind === "operator-profiled") {
    await operator.profileStop(profileFile);
    profile = summarizeProfile(profileFile, 12);
    ctx.log(`  profile: ${profileFile}`);
  }
  // Let the reconcile finish (status, Events) before counting what it wrote.
  await sleep(Math.min(30_000, 3000 + n * 10));
  const probe = await operator.probe();
  await operator.stop();
  await forceDeletePolicy(cluster, namespace, "fanout");
  const applies = probe.writes.filter((w) => w.verb === "APPLY").map((w) => w.at);
  const fromCreate = probe.since - createdAt;
  ctx.log(
    `  first requests (ms after the create): ${probe.timeline
      .slice(0, 10)
      .map((t) => `${t.sent + fromCreate}–${(t.answered ?? Number.NaN) + fromCreate} ${t.request}`)
      .join("; ")}`,
  );
  const setupMs = applies.length > 0 ? applies[0]! - createdAt : undefined;
  // The probe keeps the first 500 writes: extrapolate the loop from them when N is larger.
  const loopMs = applies.length > 1 ? ((applies.at(-1)! - applies[0]!) * (n - 1)) / (applies.length - 1) : undefined;
  return {
    kind,
    n,
    ms,
    setupMs,
    loopMs,
    writes: writesOf(probe.requests),
    requests: total(probe.requests),
    connects: probe.connects,
    profile,
  };
}
