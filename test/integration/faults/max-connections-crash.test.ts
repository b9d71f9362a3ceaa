/**
 * Item 1: the operator is SIGKILLed at each step boundary of a max_connections change and
 * started again. What it promises: it converges, with exactly ONE PostgreSQL restart per
 * change, the pool env right and the status right.
 *
 * The steps of a change (src/controller/reconciler.ts): ALTER SYSTEM + reload → write the
 * restart record into the StatefulSet's pod template (that is the restart request) → the
 * rollout replaces the pod (the bridge stops and starts PostgreSQL) → verify → status write.
 *
 * How each boundary is hit exactly, not by racing a poll against the operator:
 * - 1a after ALTER SYSTEM: an admission rule refuses the operator's pod-template change, so it
 *   can ALTER SYSTEM but not request the restart; once auto.conf holds the value and the
 *   refusal is in the operator's log, SIGKILL;
 * - 1b after the restart request: an admission rule refuses the operator's status writes and
 *   the bridge (the stand-in kubelet) is held, so the record is written but nothing else;
 * - 1c mid-rollout: the record and status are written, the old pod is gone and PostgreSQL is
 *   down (stopped as the kubelet would), the new pod not started: SIGKILL;
 * - 1d before the status write: status writes refused, the restart happens and is verified by
 *   the operator, whose status write is refused: SIGKILL.
 * Restarts are counted three ways: the bridge's starts, the distinct pg_postmaster_start_time()
 * values, and the postmaster's "ready to accept connections" log lines. ALTER SYSTEM runs are
 * counted in PostgreSQL's own statement log (log_statement = ddl), refused writes in the
 * kube-apiserver's request counters: none of it depends on what the operator logs.
 *
 * 1e checks that the Events of the actions taken before each crash exist (design: "Events for
 * every action").
 */
import { afterAll, beforeAll, describe, expect } from "vitest";
import { AppsV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from "@kubernetes/client-node";
import {
  FaultCluster,
  PostmasterStarts,
  apiserverRequests,
  denyWrites,
  loadSaKubeConfig,
  postgresLog,
  queryServer,
  sleep,
  type RequestFilter,
} from "../../harness/faults.js";
import { waitFor } from "../../harness/processes.js";
import type { OperatorProcess } from "../../harness/operator.js";
import type { PostgresPodBridge } from "../../harness/postgres-bridge.js";
import { Scenario } from "../operator/scenario.js";
import { faultSuite } from "./support.js";

const RESTART_ANNOTATION = "pooling.dbops.io/restart-for-max-connections";
const api = { group: "pooling.dbops.io", version: "v1alpha1", plural: "poolpolicies" };

let cluster: FaultCluster | undefined;
let s: Scenario;
let bridge: PostgresPodBridge;
let operator: OperatorProcess;
let starts: PostmasterStarts;
let saKc: KubeConfig;
const suite = faultSuite("test/integration/faults/max-connections-crash.test.ts", () => cluster);

beforeAll(async () => {
  cluster = await FaultCluster.start();
  saKc = loadSaKubeConfig(cluster);
  s = await Scenario.create(cluster.kc, { prefix: "crash", conf: { log_statement: "'ddl'" } });
  suite.secrets.add(s.server.password);
  bridge = await s.withPostgresWorkload();
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  starts = new PostmasterStarts(s.server).start();
  // 1a–1d restart one server four times within minutes on purpose: above the default restart
  // limit (3 an hour), which server-model.test.ts proves on its own.
  operator = cluster.operator({ name: "crash-op", env: { MAX_RESTARTS_PER_HOUR: "20" } });
  await operator.start();
  // Converged at the server's current value first: every later change is one restart.
  await s.applyPolicy(
    "p",
    s.policySpec({ postgres: { maxConnections: 100, restart: { workload: { name: "postgres" } } } }),
  );
  await s.waitForCondition("p", "Ready", { status: "True" }, 120_000);
});

afterAll(async () => {
  await starts?.stop();
  await operator?.stop();
  await s?.cleanup();
  await cluster?.stop();
});

interface Baseline {
  bridge: number;
  distinct: number;
  logStarts: number;
  stsGeneration: number;
}

/** The operator's pod-template patch of the StatefulSet, refused. */
const REFUSED_RESTART_REQUEST: RequestFilter = { code: "403", resource: "statefulsets", verb: "PATCH" };
/** The operator's status write, refused. */
const REFUSED_STATUS_WRITE: RequestFilter = {
  code: "403",
  resource: "poolpolicies",
  subresource: "status",
  verb: "PATCH",
};

/**
 * Where we are before a change: every counter of restarts, so a change can be held to +1.
 * A scenario that failed half-way may have left the operator dead or the bridge held: each one
 * starts from a running operator and bridge, so one failure does not fail the next ones too.
 */
async function baseline(): Promise<Baseline> {
  const alive = await fetch(`http://127.0.0.1:${operator.httpPort}/healthz`).then(
    (r) => r.ok,
    () => false,
  );
  if (!alive) await operator.start();
  bridge.start();
  await s.waitForCondition("p", "Ready", { status: "True" }, 120_000);
  const sts = await s.apps.readNamespacedStatefulSet({ name: "postgres", namespace: s.namespace });
  return {
    bridge: bridge.restarts,
    distinct: starts.distinct,
    logStarts: starts.logStarts(),
    stsGeneration: sts.metadata!.generation!,
  };
}

/** The values this run changed max_connections to, for 1e. */
const changed: number[] = [];
const setMaxConnections = (value: number) => {
  changed.push(value);
  return s.patchPolicy("p", { spec: { postgres: { maxConnections: value } } });
};

async function restartRecord(): Promise<string | undefined> {
  const sts = await s.apps.readNamespacedStatefulSet({ name: "postgres", namespace: s.namespace });
  return sts.spec?.template.metadata?.annotations?.[RESTART_ANNOTATION];
}

const autoConfValue = async () =>
  (
    await queryServer<{ setting: string }>(
      s.server,
      "SELECT setting FROM pg_file_settings WHERE name = 'max_connections' AND sourcefile LIKE '%auto.conf' ORDER BY seqno DESC LIMIT 1",
    )
  )[0]?.setting;

/** The operator's pod-template change of the postgres StatefulSet, made as the operator, dry run: refused while a rule holds. */
function probeRestartRequest(): Promise<unknown> {
  return saKc.makeApiClient(AppsV1Api).patchNamespacedStatefulSet(
    {
      name: "postgres",
      namespace: s.namespace,
      dryRun: "All",
      body: { spec: { template: { metadata: { annotations: { "probe.test/x": String(Date.now()) } } } } },
    },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
}

/** A status write of the policy, made as the operator, dry run. */
async function probeStatusWrite(): Promise<unknown> {
  const current = await s.readPolicy("p");
  return saKc.makeApiClient(CustomObjectsApi).patchNamespacedCustomObjectStatus(
    {
      ...api,
      namespace: s.namespace,
      name: "p",
      body: [{ op: "add", path: "/status", value: current!.status ?? {} }],
      dryRun: "All",
    },
    setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
  );
}

const refuseRestartRequests = () =>
  denyWrites(
    cluster!.kc,
    {
      name: `deny-restart-${s.namespace}`,
      namespace: s.namespace,
      apiGroup: "apps",
      resource: "statefulsets",
      allowIf: "object.spec.template == oldObject.spec.template",
      message: "fault injection: the operator may not change the postgres pod template now",
      user: cluster!.saUser,
    },
    probeRestartRequest,
  );

const refuseStatusWrites = () =>
  denyWrites(
    cluster!.kc,
    {
      name: `deny-status-${s.namespace}`,
      namespace: s.namespace,
      apiGroup: "pooling.dbops.io",
      resource: "poolpolicies/status",
      allowIf: "false",
      message: "fault injection: the operator may not write status now",
      user: cluster!.saUser,
    },
    probeStatusWrite,
  );

/** Returns a function that waits until the kube-apiserver refused one more such write of the operator's. */
async function refusalWatch(filter: RequestFilter): Promise<(what: string) => Promise<void>> {
  const since = await apiserverRequests(cluster!, filter);
  return (what) =>
    waitFor(
      `the operator to hit the refusal (${what})`,
      async () => (await apiserverRequests(cluster!, filter)) > since,
      { timeoutMs: 60_000, intervalMs: 100 },
    );
}

/** ALTER SYSTEM statements for this value in PostgreSQL's own log. */
const alterSystemRuns = (value: number) =>
  postgresLog(s.server)
    .split("\n")
    .filter((l) => new RegExp(`statement: ALTER SYSTEM SET max_connections = ${value}\\b`).test(l)).length;

/** Kills the operator with SIGKILL and checks that nothing restarted PostgreSQL behind our back. */
async function killOperator(before: Baseline): Promise<void> {
  await operator.kill();
  expect(bridge.restarts, "restarts at the moment of the kill").toBe(before.bridge);
}

/**
 * The promise of item 1, after the operator was started again: converged to `value`, with
 * exactly one more restart counted every way, the env right, the status right.
 */
async function expectConverged(
  value: number,
  before: Baseline,
  m: { note(k: string, v: string | number): void },
): Promise<void> {
  const p = await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" }, 120_000);
  await s.waitForCondition("p", "Ready", { status: "True" }, 60_000);
  // Let the poller see the final start time, and give a wrong second restart time to happen.
  await sleep(3_000);
  const sts = await s.apps.readNamespacedStatefulSet({ name: "postgres", namespace: s.namespace });
  const counted = {
    bridge: bridge.restarts - before.bridge,
    startTimes: starts.distinct - before.distinct,
    logStarts: starts.logStarts() - before.logStarts,
    templateChanges: sts.metadata!.generation! - before.stsGeneration,
    // ALTER SYSTEM runs, across the crash, in PostgreSQL's own statement log.
    alters: alterSystemRuns(value),
  };
  m.note(
    `max_connections ${value}: restarts`,
    `${counted.bridge} (bridge) / ${counted.startTimes} (start times) / ${counted.logStarts} (log), ALTER SYSTEM ×${counted.alters}, pod-template changes ×${counted.templateChanges}`,
  );
  expect(await s.server.setting("max_connections")).toBe(String(value));
  expect(counted.bridge, "bridge: PostgreSQL starts for the new pod").toBe(1);
  expect(counted.startTimes, "distinct pg_postmaster_start_time() values").toBe(1);
  expect(counted.logStarts, "'ready to accept connections' lines").toBe(1);
  expect(counted.templateChanges, "pod-template changes (restart requests)").toBe(1);
  expect(counted.alters, "ALTER SYSTEM runs once per change, crash or not").toBe(1);
  expect(sts.spec?.template.metadata?.annotations?.[RESTART_ANNOTATION]).toMatch(new RegExp(`^${value}@`));
  // Status right.
  const latest = (await s.readPolicy("p"))!;
  expect(latest.status?.observedGeneration).toBe(latest.metadata.generation);
  expect(latest.status?.postgres?.maxConnections).toBe(value);
  expect(latest.status?.postgres?.pendingRestart).toBe(false);
  expect(p.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
    "verified after the restart",
  );
  // Env right: exactly the operator's two entries next to the app's own.
  expect(await s.envOf("api")).toEqual({ LOG_LEVEL: "info", DB_POSTGRES_MIN_CONN: "5", DB_POSTGRES_MAX_CONN: "25" });
}

describe("SIGKILL at each step boundary of a max_connections change", () => {
  suite.scenario("1a", async (m) => {
    const before = await baseline();
    const lift = await refuseRestartRequests();
    try {
      const refused = await refusalWatch(REFUSED_RESTART_REQUEST);
      await setMaxConnections(110);
      await waitFor("ALTER SYSTEM to have run", async () => (await autoConfValue()) === "110", {
        timeoutMs: 60_000,
        intervalMs: 50,
      });
      await refused("restart request refused");
      await killOperator(before);
    } finally {
      await lift();
    }
    // At the kill: the new value waits in auto.conf, no restart was requested.
    expect(
      (await queryServer(s.server, "SELECT pending_restart FROM pg_settings WHERE name = 'max_connections'"))[0]!
        .pending_restart,
    ).toBe(true);
    expect((await restartRecord()) ?? "(none)").not.toMatch(/^110@/);
    await operator.start();
    await expectConverged(110, before, m);
  });

  suite.scenario("1b", async (m) => {
    const before = await baseline();
    const statusBefore = (await s.status("p")).postgres?.maxConnections;
    await bridge.stop(); // the kubelet is slow: the requested restart cannot happen yet
    const lift = await refuseStatusWrites();
    try {
      const refused = await refusalWatch(REFUSED_STATUS_WRITE);
      await setMaxConnections(120);
      await waitFor(
        "the restart request (pod-template record)",
        async () => /^120@/.test((await restartRecord()) ?? ""),
        { timeoutMs: 60_000, intervalMs: 50 },
      );
      await refused("status write refused");
      await killOperator(before);
    } finally {
      await lift();
    }
    // At the kill: the record is written, the status still speaks of the old value.
    expect((await s.status("p")).postgres?.maxConnections).toBe(statusBefore);
    await operator.start();
    bridge.start();
    await expectConverged(120, before, m);
  });

  suite.scenario("1c", async (m) => {
    const before = await baseline();
    await bridge.stop();
    const oldPod = await s.core.readNamespacedPod({ name: "postgres-0", namespace: s.namespace });
    await setMaxConnections(130);
    await s.waitForCondition("p", "MaxConnectionsApplied", { reason: "RestartInProgress" }, 60_000);
    expect(await restartRecord()).toMatch(/^130@/);
    // The rollout replaces the pod; the kubelet would stop the old container: PostgreSQL goes down.
    await waitFor(
      "the old postgres pod to be replaced",
      async () => {
        const pod = await s.core
          .readNamespacedPod({ name: "postgres-0", namespace: s.namespace })
          .catch(() => undefined);
        return pod !== undefined && pod.metadata?.uid !== oldPod.metadata?.uid;
      },
      { timeoutMs: 60_000 },
    );
    await s.server.stop("fast");
    await killOperator(before);
    // The operator comes back to a server that is down, mid-rollout, and must just wait.
    await operator.start();
    await s.waitForCondition("p", "PostgresReachable", { status: "False" }, 60_000);
    await sleep(3_000);
    expect(await restartRecord()).toMatch(/^130@/);
    bridge.start();
    await expectConverged(130, before, m);
  });

  suite.scenario("1d", async (m) => {
    const before = await baseline();
    await bridge.stop();
    await setMaxConnections(140);
    await s.waitForCondition("p", "MaxConnectionsApplied", { reason: "RestartInProgress" }, 60_000);
    const lift = await refuseStatusWrites();
    try {
      bridge.start(); // the restart happens now…
      await waitFor(
        "PostgreSQL to run with 140",
        async () =>
          (
            await queryServer<{ v: string }>(s.server, "SELECT current_setting($1) AS v", ["max_connections"]).catch(
              () => [],
            )
          )[0]?.v === "140",
        { timeoutMs: 120_000 },
      );
      // …and the operator verifies it, but its status write is refused (counted from now on:
      // a refusal before the restart would be another boundary).
      const refused = await refusalWatch(REFUSED_STATUS_WRITE);
      await refused("status write after verification refused");
      await killOperator({ ...before, bridge: before.bridge + 1 });
    } finally {
      await lift();
    }
    expect((await s.status("p")).conditions?.find((c) => c.type === "MaxConnectionsApplied")?.reason).toBe(
      "RestartInProgress",
    );
    await operator.start();
    await expectConverged(140, before, m);
  });

  suite.scenario("1e", async (m) => {
    // After 1a–1d: for each change they made, the Events of the actions that were carried out.
    if (changed.length === 0) throw new Error("1e checks the changes of 1a–1d: run it with them");
    const events = await s.events();
    const missing: string[] = [];
    for (const value of changed) {
      const about = (e: { note: string }) => new RegExp(`max_connections = ${value}\\b`).test(e.note);
      const altered = events.filter((e) => e.reason === "MaxConnectionsAltered" && about(e)).length;
      const requested = events.filter((e) => e.reason === "RestartRequested" && about(e)).length;
      m.note(`events for ${value}`, `${altered} MaxConnectionsAltered, ${requested} RestartRequested`);
      if (altered !== 1) missing.push(`${value}: ${altered} MaxConnectionsAltered`);
      if (requested !== 1) missing.push(`${value}: ${requested} RestartRequested`);
    }
    expect(missing.join("; ") || "none", "each ALTER SYSTEM and each restart request has exactly one Event").toBe(
      "none",
    );
  });
});
