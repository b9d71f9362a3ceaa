/**
 * Item 2: two operator processes with leader election on the chart's Lease.
 *
 * What it breaks: the leader is SIGKILLed (it cannot release the Lease: the standby must wait
 * the lease out), and later a leader is stopped gracefully (it releases the Lease).
 * What it promises: only the Lease holder reconciles and writes (its metrics count reconciles
 * and status writes, the standby's count none; every Event names the holder as its
 * reportingInstance); after a SIGKILL the standby takes over within the lease duration plus a
 * few seconds and acts; after a graceful stop within about one retry period.
 *
 * Work keeps flowing the whole time: a new session left idle in a transaction every 2 s gives
 * the reaper something to terminate at every 5 s pass, so the leader writes status and Events
 * continuously and a second writer could not hide.
 */
import { afterAll, beforeAll, describe, expect } from "vitest";
import { CoordinationV1Api, EventsV1Api } from "@kubernetes/client-node";
import pg from "pg";
import {
  CHART_LEASE_NAME,
  FaultCluster,
  RELEASE_NAMESPACE,
  metricValue,
  sleep,
  timeUntil,
} from "../../harness/faults.js";
import { waitFor } from "../../harness/processes.js";
import type { OperatorProcess } from "../../harness/operator.js";
import { APP_DATABASE, Scenario } from "../operator/scenario.js";
import { faultSuite } from "./support.js";

/** The operator's defaults (src/runtime/leader.ts): 15 s lease, retries every 2 s × [1, 2.2). */
const LEASE_DURATION_S = 15;
const MAX_RETRY_S = 2 * 2.2;

let cluster: FaultCluster | undefined;
let s: Scenario;
let a: OperatorProcess;
let b: OperatorProcess;
let aAgain: OperatorProcess;
const suite = faultSuite("test/integration/faults/leader-election.test.ts", () => cluster);
let victims: VictimSource;

const electing = (name: string) => ({
  name,
  env: { LEADER_ELECT: "true", POD_NAMESPACE: RELEASE_NAMESPACE, LEASE_NAME: CHART_LEASE_NAME, POD_NAME: name },
});

beforeAll(async () => {
  cluster = await FaultCluster.start();
  s = await Scenario.create(cluster.kc, { prefix: "leader" });
  suite.secrets.add(s.server.password);
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  a = cluster.operator(electing("leader-a"));
  b = cluster.operator(electing("leader-b"));
  aAgain = cluster.operator(electing("leader-a2"));
  await a.start();
  await waitFor("leader-a to hold the Lease", async () => (await holder()) === "leader-a", { timeoutMs: 30_000 });
  await b.start(); // ready as a standby
  await s.applyPolicy("p", s.policySpec({ reaper: { interval: "5s", idleInTransactionTimeout: "1s" } }));
  await s.waitForCondition("p", "Ready", { status: "True" }, 120_000);
  victims = new VictimSource(s);
  victims.start();
});

afterAll(async () => {
  await victims?.stop();
  await s?.cleanup();
  await cluster?.stop();
});

async function lease() {
  return cluster!.kc
    .makeApiClient(CoordinationV1Api)
    .readNamespacedLease({ name: CHART_LEASE_NAME, namespace: RELEASE_NAMESPACE });
}

const holder = async () => (await lease().catch(() => undefined))?.spec?.holderIdentity ?? "";

interface WrittenEvent {
  by: string;
  reason: string;
  at: number;
}

async function eventsByInstance(): Promise<WrittenEvent[]> {
  const list = await cluster!.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: s.namespace });
  // The operator's Events only: the scheduler and the controller-manager write some too.
  return list.items
    .filter((e) => e.reportingController === "pooling.dbops.io/poolpolicy-operator")
    .map((e) => ({
      by: e.reportingInstance ?? "",
      reason: e.reason ?? "",
      // The latest occurrence: a repeated Event is one object with a series.
      at: new Date(String(e.series?.lastObservedTime ?? e.eventTime ?? e.metadata?.creationTimestamp)).getTime(),
    }));
}

async function counters(op: OperatorProcess) {
  const text = await op.metrics();
  return {
    reconciles: metricValue(text, "controller_runtime_reconcile_total"),
    statusWrites: metricValue(text, "poolpolicy_status_writes_total"),
    leading: metricValue(text, "leader_election_master_status"),
    synced: metricValue(text, "informer_synced", { resource: "poolpolicies" }),
  };
}

const countBy = (events: WrittenEvent[]) =>
  events.reduce<Record<string, number>>((acc, e) => {
    acc[e.by] = (acc[e.by] ?? 0) + 1;
    return acc;
  }, {});

describe("leader election between two operator processes", () => {
  suite.scenario("2a", async (m) => {
    // Let the leader work for a while (two reaper passes at least) with the standby watching.
    await sleep(12_000);
    const leader = await counters(a);
    const standby = await counters(b);
    const events = await eventsByInstance();
    m.note("leader", `${leader.reconciles} reconciles, ${leader.statusWrites} status writes`);
    m.note("standby", `${standby.reconciles} reconciles, ${standby.statusWrites} status writes`);
    m.note("Events by instance", JSON.stringify(countBy(events)));
    expect(leader.leading).toBe(1);
    expect(leader.reconciles).toBeGreaterThan(0);
    expect(leader.statusWrites).toBeGreaterThan(0);
    expect(
      events.some((e) => e.reason === "SessionsReaped"),
      "the leader reaps and says so",
    ).toBe(true);
    expect(standby.leading).toBe(0);
    expect(standby.reconciles, "the standby reconciled").toBe(0);
    expect(standby.statusWrites, "the standby wrote status").toBe(0);
    expect(standby.synced, "the standby started no informer").toBe(0);
    expect(new Set(events.map((e) => e.by))).toEqual(new Set(["leader-a"]));
    // One field manager of the operator on the target, whoever leads.
    const api = await s.readDeployment("api");
    const appliers = (api.metadata?.managedFields ?? []).filter((f) => f.operation === "Apply").map((f) => f.manager);
    expect(appliers).toEqual(["poolpolicy-operator/p"]);
  });

  suite.scenario("2b", async (m) => {
    const transitionsBefore = (await lease()).spec?.leaseTransitions ?? 0;
    const killedAt = Date.now();
    await a.kill();
    const takeoverMs = await timeUntil(
      "leader-b to take the Lease",
      async () => (await holder()) === "leader-b",
      40_000,
      100,
    );
    const firstActionMs =
      (await timeUntil(
        "leader-b to act (an Event of its own)",
        async () => (await eventsByInstance()).some((e) => e.by === "leader-b"),
        60_000,
        200,
      )) + takeoverMs;
    const bound = LEASE_DURATION_S + 2 * MAX_RETRY_S + 2;
    m.note("takeover after SIGKILL", `${(takeoverMs / 1000).toFixed(1)} s (bound ${bound} s)`);
    m.note("first action of the new leader", `${(firstActionMs / 1000).toFixed(1)} s after the kill`);
    expect(takeoverMs / 1000).toBeLessThanOrEqual(bound);
    // Not earlier than the lease allows: the old leader might still have been writing.
    expect(takeoverMs / 1000).toBeGreaterThanOrEqual(LEASE_DURATION_S - MAX_RETRY_S);
    expect((await lease()).spec?.leaseTransitions).toBe(transitionsBefore + 1);
    // A change made now is applied by the new leader.
    await s.patchPolicy("p", { spec: { pool: { maxSize: 30 } } });
    await waitFor(
      "the new leader to apply the change",
      async () => (await s.envOf("api")).DB_POSTGRES_MAX_CONN === "30",
      { timeoutMs: 60_000 },
    );
    const events = await eventsByInstance();
    expect(
      events.filter((e) => e.by === "leader-a" && e.at > killedAt + 1_000),
      "Events by the dead leader after its death",
    ).toEqual([]);
    expect((await counters(b)).statusWrites).toBeGreaterThan(0);
    m.note("Events by instance", JSON.stringify(countBy(events)));
  });

  suite.scenario("2c", async (m) => {
    await aAgain.start(); // a standby again
    await sleep(3_000);
    expect(await holder()).toBe("leader-b");
    expect((await counters(aAgain)).reconciles).toBe(0);
    const stoppedAt = Date.now();
    await b.stop(); // SIGTERM: finishes its reconciles, releases the Lease
    const exitedAt = Date.now();
    // Measured from the moment the old leader had exited. Far under the 15 s lease: it released
    // the Lease on its way out, nobody had to wait it out.
    const handoverMs = await timeUntil(
      "leader-a2 to take the released Lease",
      async () => (await holder()) === "leader-a2",
      30_000,
      100,
    );
    const sinceStop = Date.now() - stoppedAt;
    const bound = MAX_RETRY_S + 3;
    m.note(
      "hand-over after SIGTERM",
      `${(handoverMs / 1000).toFixed(1)} s after the old leader exited (${(sinceStop / 1000).toFixed(1)} s after SIGTERM; bound ${bound} s)`,
    );
    expect(handoverMs / 1000).toBeLessThanOrEqual(bound);
    await s.patchPolicy("p", { spec: { pool: { maxSize: 35 } } });
    await waitFor(
      "the new leader to apply the change",
      async () => (await s.envOf("api")).DB_POSTGRES_MAX_CONN === "35",
      { timeoutMs: 60_000 },
    );
    await waitFor(
      "an Event of the new leader",
      async () => (await eventsByInstance()).some((e) => e.by === "leader-a2"),
      { timeoutMs: 30_000 },
    );
    const events = await eventsByInstance();
    expect(
      events.filter((e) => e.by !== "leader-a2" && e.at > exitedAt),
      "Events by anyone but the new leader after the hand-over",
    ).toEqual([]);
    m.note("Events by instance", JSON.stringify(countBy(events)));
  });
});

/**
 * Keeps the reaper busy: every 2 s a new session of the app database opens a transaction and
 * sits idle in it; the reaper terminates it after 1 s at its next pass.
 */
class VictimSource {
  private running = false;
  private loop?: Promise<void>;
  private readonly clients: pg.Client[] = [];

  constructor(private readonly scenario: Scenario) {}

  start(): void {
    this.running = true;
    this.loop = (async () => {
      for (let i = 0; this.running; i++) {
        try {
          const c = new pg.Client({
            ...this.scenario.server.connection,
            database: APP_DATABASE,
            application_name: `victim-${i}`,
          });
          c.on("error", () => undefined);
          await c.connect();
          await c.query("BEGIN");
          await c.query("SELECT 1");
          this.clients.push(c);
        } catch {
          // the server may be restarting
        }
        await sleep(2_000);
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    for (const c of this.clients) await c.end().catch(() => undefined);
  }
}
