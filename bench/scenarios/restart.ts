/**
 * 6. Restart: time from a change of spec.postgres.maxConnections to its verified effect
 * (MaxConnectionsApplied=True/Applied for the new generation, which the operator sets only
 * after the rolling restart and a check of pg_postmaster_start_time()), and how long new
 * connections fail meanwhile, seen by a prober that opens a fresh connection every 50 ms.
 *
 * The Postgres StatefulSet is bound to a real local PostgreSQL by the harness's pod bridge
 * (test/harness/postgres-bridge.ts), which stops and starts the server as pods go and come.
 *
 * Baseline, same run: the same change made by hand with the raw tools, operator stopped:
 * ALTER SYSTEM + pg_reload_conf() and a `kubectl rollout restart` of the StatefulSet (a pod
 * template annotation), until the prober sees the new value. Also, once, the floor: ALTER
 * SYSTEM and a restart of the server process itself, without Kubernetes.
 */
import pg from "pg";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { PoolPolicy } from "../../src/api/schema.js";
import { waitForStatefulSet } from "../../test/harness/kube.js";
import { postgresService, postgresStatefulSet } from "../../test/harness/manifests.js";
import { PostgresPodBridge } from "../../test/harness/postgres-bridge.js";
import { waitFor } from "../../test/harness/processes.js";
import {
  conditionOf,
  createDeployments,
  createNamespace,
  createPolicy,
  patchPolicy,
  policyWatch,
  startCluster,
  waitPoliciesReady,
  type Cluster,
} from "../lib/cluster.js";
import { BenchOperator } from "../lib/operator.js";
import { createCredentialsSecret, policySpec, startPostgres, type BenchPostgres } from "../lib/postgres.js";
import type { ScenarioResult } from "../lib/report.js";
import type { Ctx } from "../lib/settings.js";
import { fmtMs, fmtRatio, mean, median, sleep } from "../lib/stats.js";
import { waitQuiet } from "./steady.js";

interface Attempt {
  start: number;
  end: number;
  ok: boolean;
  value?: number;
  error?: string;
}

/** Opens a new connection every `intervalMs` and asks max_connections, like an app's pool would. */
class Prober {
  readonly attempts: Attempt[] = [];
  private running = false;
  private loop?: Promise<void>;

  constructor(
    private readonly pgs: BenchPostgres,
    private readonly intervalMs = 50,
  ) {}

  start(): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        const start = performance.now();
        const client = new pg.Client({
          ...this.pgs.server.connection,
          application_name: "prober",
          connectionTimeoutMillis: 2000,
        });
        client.on("error", () => undefined);
        try {
          await client.connect();
          const value = Number((await client.query("SHOW max_connections")).rows[0].max_connections);
          this.attempts.push({ start, end: performance.now(), ok: true, value });
        } catch (err) {
          this.attempts.push({ start, end: performance.now(), ok: false, error: (err as Error).message });
        } finally {
          await client.end().catch(() => undefined);
        }
        const left = this.intervalMs - (performance.now() - start);
        if (left > 0) await sleep(left);
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  /** When the new value first showed, and how long new connections failed, after `t0`. */
  effect(t0: number, value: number): { effectMs: number; failedMs: number; failedAttempts: number; errors: string[] } {
    const after = this.attempts.filter((a) => a.start >= t0);
    const first = after.find((a) => a.ok && a.value === value);
    const failed = after.filter((a) => !a.ok && (!first || a.start <= first.end));
    let failedMs = 0;
    if (failed.length > 0) {
      const firstFail = failed[0]!;
      const lastFail = failed.at(-1)!;
      const recovered = after.find((a) => a.ok && a.start > lastFail.start);
      failedMs = (recovered?.start ?? lastFail.end) - firstFail.start;
    }
    const errors = [...new Set(failed.map((a) => (a.error ?? "").replace(/\d+/g, "N")))];
    return { effectMs: first ? first.end - t0 : Number.NaN, failedMs, failedAttempts: failed.length, errors };
  }
}

interface Change {
  kind: "baseline (ALTER SYSTEM + rollout restart)" | "operator" | "floor (ALTER SYSTEM + process restart)";
  from: number;
  to: number;
  effectMs: number;
  verifiedMs?: number;
  failedMs: number;
  failedAttempts: number;
  errors: string[];
}

export async function restart(ctx: Ctx): Promise<ScenarioResult> {
  const { settings } = ctx;
  const started = performance.now();
  const cluster = await startCluster();
  const pgs = await startPostgres();
  const operator = new BenchOperator(cluster.cp.kubeconfigPath, settings.logDir, "restart", {
    WORKERS: String(settings.workers),
    // The scenario restarts one server several times within minutes on purpose: above the
    // operator's default restart limit (3 an hour).
    MAX_RESTARTS_PER_HOUR: "60",
  });
  const prober = new Prober(pgs);
  let bridge: PostgresPodBridge | undefined;
  const changes: Change[] = [];
  try {
    const ns = await createNamespace(cluster, "restart");
    await createCredentialsSecret(cluster, ns, pgs);
    await cluster.core.createNamespacedService({ namespace: ns, body: postgresService(ns) });
    await cluster.apps.createNamespacedStatefulSet({ namespace: ns, body: postgresStatefulSet(ns) });
    bridge = new PostgresPodBridge(cluster.kc, ns, "postgres", [pgs.server]);
    bridge.start();
    await waitForStatefulSet(cluster.kc, ns, "postgres");
    await createDeployments(cluster, ns, {
      prefix: "app",
      to: 1,
      replicas: 0,
      labels: () => ({ "bench.pooling.dbops.io/group": "g0" }),
    });
    let value = 110;
    await createPolicy(
      cluster,
      ns,
      "db",
      policySpec(pgs, {
        postgres: { maxConnections: value, restart: { workload: { kind: "StatefulSet", name: "postgres" } } },
        reaper: { enabled: false },
      }),
    );
    await operator.start();
    await waitPoliciesReady(cluster, ns, 1, 300_000);
    prober.start();

    for (let i = 0; i < settings.restartChanges; i++) {
      await operator.stop();
      changes.push(await baselineChange(cluster, ns, pgs, prober, value, value + 10));
      value += 10;
      ctx.log(
        `baseline ${value - 10} → ${value}: effect ${fmtMs(changes.at(-1)!.effectMs)}, new connections failed ${fmtMs(changes.at(-1)!.failedMs)}`,
      );
      await patchPolicy(cluster, ns, "db", { spec: { postgres: { maxConnections: value } } });
      await operator.start();
      await waitPoliciesReady(cluster, ns, 1, 300_000);
      await waitQuiet(operator);
      changes.push(await operatorChange(cluster, ns, prober, value, value + 10));
      value += 10;
      ctx.log(
        `operator ${value - 10} → ${value}: verified ${fmtMs(changes.at(-1)!.verifiedMs!)}, new connections failed ${fmtMs(changes.at(-1)!.failedMs)}`,
      );
    }
    await operator.stop();
    changes.push(await baselineChange(cluster, ns, pgs, prober, value, value + 10));
    value += 10;
    ctx.log(`baseline ${value - 10} → ${value}: effect ${fmtMs(changes.at(-1)!.effectMs)}`);
    // The floor: no Kubernetes at all.
    const t0 = performance.now();
    await pgs.server.query(`ALTER SYSTEM SET max_connections = ${value + 10}`);
    await pgs.server.restart("fast");
    await waitFor(
      "the new max_connections",
      () => prober.attempts.some((a) => a.start >= t0 && a.ok && a.value === value + 10),
      { timeoutMs: 60_000, intervalMs: 50 },
    );
    await sleep(300);
    changes.push({
      kind: "floor (ALTER SYSTEM + process restart)",
      from: value,
      to: value + 10,
      ...prober.effect(t0, value + 10),
    });
  } finally {
    await prober.stop();
    await operator.stop().catch(() => undefined);
    await bridge?.stop().catch(() => undefined);
    await pgs.destroy().catch(() => undefined);
    await cluster.stop().catch(() => undefined);
  }

  const ops = changes.filter((c) => c.kind === "operator");
  const bases = changes.filter((c) => c.kind.startsWith("baseline"));
  const floor = changes.find((c) => c.kind.startsWith("floor"));
  const verified = median(ops.map((c) => c.verifiedMs!));
  const baseEffect = mean(bases.map((c) => c.effectMs));
  const opFailed = median(ops.map((c) => c.failedMs));
  const baseFailed = mean(bases.map((c) => c.failedMs));
  return {
    id: "restart",
    title: "6. Restart",
    method: [
      "A PoolPolicy with spec.postgres.maxConnections and restart.workload = the Postgres StatefulSet (restart policy Automatic, no maintenance window), the StatefulSet's pod bound to a real PostgreSQL by the harness's pod bridge.",
      "Operator runs alternate with baseline runs made by hand with the raw tools while the operator is stopped; a prober opens a new connection every 50 ms throughout.",
    ],
    checks: [
      {
        what: "6. restart: max_connections change → verified (MaxConnectionsApplied=True)",
        measured: `${fmtMs(verified)} (effect seen by clients after ${fmtMs(median(ops.map((c) => c.effectMs)))})`,
        baseline: `${fmtMs(baseEffect)} (ALTER SYSTEM + rollout restart by hand)`,
        ratio: fmtRatio(verified / baseEffect),
        goal: "— (measure)",
        met: null,
      },
      {
        what: "6. restart: new connections failing meanwhile",
        measured: `${fmtMs(opFailed)} (${ops.map((c) => c.failedAttempts).join(", ")} attempts failed)`,
        baseline: `${fmtMs(baseFailed)} by hand${floor ? `; ${fmtMs(floor.failedMs)} for a bare process restart` : ""}`,
        ratio: fmtRatio(opFailed / baseFailed),
        goal: "— (measure)",
        met: null,
      },
    ],
    tables: [
      {
        columns: [
          "run",
          "max_connections",
          "new value seen by a new connection",
          "verified by the operator",
          "new connections failing",
          "failed attempts",
          "errors seen",
        ],
        rows: changes.map((c) => [
          c.kind,
          `${c.from} → ${c.to}`,
          fmtMs(c.effectMs),
          c.verifiedMs !== undefined ? fmtMs(c.verifiedMs) : "",
          fmtMs(c.failedMs),
          String(c.failedAttempts),
          c.errors.join("; ").slice(0, 160),
        ]),
      },
    ],
    notes: [
      "The operator's time includes its own steps: noticing the spec change, ALTER SYSTEM + reload, writing the restart record on the StatefulSet, waiting for the rollout (it polls every 2 s while a restart is in progress) and checking that pg_postmaster_start_time() moved and the value took effect before it reports Applied.",
      "Connections fail from the fast shutdown of the old server until the new one accepts connections: the same for the operator and by hand, since both restart the pod; the pod bridge polls the API every 200 ms, standing in for a kubelet.",
    ],
    durationMs: performance.now() - started,
    raw: { changes },
  };
}

async function baselineChange(
  cluster: Cluster,
  ns: string,
  pgs: BenchPostgres,
  prober: Prober,
  from: number,
  to: number,
): Promise<Change> {
  await sleep(1000);
  const t0 = performance.now();
  await pgs.server.query(`ALTER SYSTEM SET max_connections = ${to}`);
  await pgs.server.query("SELECT pg_reload_conf()");
  await cluster.apps.patchNamespacedStatefulSet(
    {
      name: "postgres",
      namespace: ns,
      body: {
        spec: {
          template: { metadata: { annotations: { "kubectl.kubernetes.io/restartedAt": new Date().toISOString() } } },
        },
      },
    },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
  await waitFor(
    `max_connections ${to} after a rollout restart`,
    () => prober.attempts.some((a) => a.start >= t0 && a.ok && a.value === to),
    { timeoutMs: 120_000, intervalMs: 50 },
  );
  await waitForStatefulSet(cluster.kc, ns, "postgres");
  return { kind: "baseline (ALTER SYSTEM + rollout restart)", from, to, ...prober.effect(t0, to) };
}

async function operatorChange(cluster: Cluster, ns: string, prober: Prober, from: number, to: number): Promise<Change> {
  let verifiedAt = 0;
  let generation = Number.POSITIVE_INFINITY;
  const watch = policyWatch(cluster, ns, (_type, p: PoolPolicy, at) => {
    const c = conditionOf(p, "MaxConnectionsApplied");
    if (
      verifiedAt === 0 &&
      (p.metadata.generation ?? 0) >= generation &&
      c?.status === "True" &&
      c.reason === "Applied" &&
      p.status?.postgres?.maxConnections === to
    )
      verifiedAt = at;
  });
  await watch.start();
  await sleep(1000);
  const t0 = performance.now();
  const patched = await patchPolicy(cluster, ns, "db", { spec: { postgres: { maxConnections: to } } });
  generation = patched.metadata.generation ?? 0;
  await waitFor(`MaxConnectionsApplied for ${to}`, () => verifiedAt > 0, { timeoutMs: 300_000, intervalMs: 100 });
  watch.stop();
  return { kind: "operator", from, to, verifiedMs: verifiedAt - t0, ...prober.effect(t0, to) };
}
