import { CoordinationV1Api, V1MicroTime, type KubeConfig } from "@kubernetes/client-node";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { createNamespace, deleteNamespace, loadKubeConfig } from "../../harness/kube.js";
import { freePort } from "../../harness/ports.js";
import { waitFor } from "../../harness/processes.js";
import { LeaderElector, type LeaderElectionOptions } from "../../../src/runtime/leader.js";
import { pino } from "pino";
import { BlackHoleRelay, quietLogger } from "./support.js";

/** Short timings so the tests take seconds; same proportions as the 15/10/2 s defaults. */
const timings = { leaseDurationMs: 3_000, renewDeadlineMs: 2_000, retryPeriodMs: 400 };

interface Candidate {
  elector: LeaderElector;
  started: number;
  stopped: number;
}

describe("LeaderElector against a real kube-apiserver", () => {
  let kc: KubeConfig;
  let coordination: CoordinationV1Api;
  let namespace: string;
  const candidates: Candidate[] = [];

  beforeAll(async () => {
    kc = loadKubeConfig(inject("kubeconfigPath"));
    coordination = kc.makeApiClient(CoordinationV1Api);
    namespace = await createNamespace(kc, "leader");
  });

  afterEach(async () => {
    await Promise.all(candidates.splice(0).map((c) => c.elector.release()));
  });

  afterAll(async () => {
    await deleteNamespace(kc, namespace);
  });

  function candidate(
    identity: string,
    lease: string,
    config: KubeConfig = kc,
    extra: Partial<LeaderElectionOptions> = {},
  ): Candidate {
    const c: Candidate = { elector: undefined as unknown as LeaderElector, started: 0, stopped: 0 };
    c.elector = new LeaderElector(config, {
      namespace,
      name: lease,
      identity,
      ...timings,
      logger: quietLogger,
      onStartedLeading: () => {
        c.started += 1;
      },
      onStoppedLeading: () => {
        c.stopped += 1;
      },
      ...extra,
    });
    candidates.push(c);
    c.elector.start();
    return c;
  }

  const leaders = (cs: Candidate[]) => cs.filter((c) => c.elector.isLeader());
  const isLeaseWarning = (line: string) => line.includes('"level":40') && line.includes("leader lease");

  it("elects exactly one of two candidates, and hands over on release", async () => {
    const a = candidate("a", "two-candidates");
    const b = candidate("b", "two-candidates");
    await waitFor("a leader", () => leaders([a, b]).length === 1, { timeoutMs: 20_000 });

    // Well past a lease duration: the standby must not take over a lease that is renewed.
    await new Promise((resolve) => setTimeout(resolve, 2 * timings.leaseDurationMs));
    expect(leaders([a, b])).toHaveLength(1);
    expect(a.started + b.started).toBe(1);
    expect(a.stopped + b.stopped).toBe(0);

    const [leader] = leaders([a, b]);
    const standby = leader === a ? b : a;
    const lease = await coordination.readNamespacedLease({ name: "two-candidates", namespace });
    expect(lease.spec?.holderIdentity).toBe(leader!.elector.identity);
    expect(lease.spec?.leaseDurationSeconds).toBe(3);
    // MicroTime: six fractional digits on the wire.
    expect(String(lease.spec?.renewTime)).toMatch(/\.\d{6}Z$/);

    await leader!.elector.release();
    expect(leader!.elector.isLeader()).toBe(false);
    // A released lease is free at once: the standby takes it at its next retry, not after the lease.
    await waitFor("the standby to take over", () => standby.elector.isLeader(), { timeoutMs: 10_000 });
    expect(standby.started).toBe(1);
    // Release is voluntary: it is not a loss of leadership.
    expect(leader!.stopped).toBe(0);
    const taken = await coordination.readNamespacedLease({ name: "two-candidates", namespace });
    expect(taken.spec?.holderIdentity).toBe(standby.elector.identity);
    expect(taken.spec?.leaseTransitions).toBe(1);
  });

  it("stops leading at once when another identity takes the Lease", async () => {
    const a = candidate("a", "taken-over");
    await waitFor("a to lead", () => a.elector.isLeader(), { timeoutMs: 20_000 });

    const lease = await coordination.readNamespacedLease({ name: "taken-over", namespace });
    const now = new V1MicroTime();
    await coordination.replaceNamespacedLease({
      name: "taken-over",
      namespace,
      body: {
        ...lease,
        spec: { ...lease.spec, holderIdentity: "intruder", acquireTime: now, renewTime: now, leaseDurationSeconds: 60 },
      },
    });

    await waitFor("a to notice", () => a.stopped === 1, { timeoutMs: 10_000 });
    expect(a.elector.isLeader()).toBe(false);
    const after = await coordination.readNamespacedLease({ name: "taken-over", namespace });
    expect(after.spec?.holderIdentity).toBe("intruder");
  });

  it("stops leading when renewals fail for longer than the renew deadline", async () => {
    const { relay, kubeConfig } = await BlackHoleRelay.start(kc);
    try {
      const a = candidate("a", "cut-off", kubeConfig);
      await waitFor("a to lead", () => a.elector.isLeader(), { timeoutMs: 20_000 });

      relay.swallowEverything();
      await waitFor("a to give up", () => a.stopped === 1, { timeoutMs: 10_000 });
      expect(a.elector.isLeader()).toBe(false);
      // It gave up before the lease ran out for everyone else: the Lease still names it,
      // and nobody could have taken it over yet.
      const lease = await coordination.readNamespacedLease({ name: "cut-off", namespace });
      expect(lease.spec?.holderIdentity).toBe("a");
    } finally {
      await relay.close();
    }
  });

  it("a standby that cannot reach the API server warns on every attempt and is not ready", async () => {
    // A server address where nothing listens: the mistake a wrong kubeconfig makes.
    const unreachable = loadKubeConfig(inject("kubeconfigPath"));
    const cluster = unreachable.getCurrentCluster()!;
    unreachable.clusters = [{ ...cluster, server: `https://127.0.0.1:${await freePort()}` }];
    const warnings: string[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => warnings.push(line) });
    const a = candidate("a", "unreachable", unreachable, { logger });
    await waitFor("two failed attempts to be logged", () => warnings.filter(isLeaseWarning).length >= 2, {
      timeoutMs: 20_000,
    });
    expect(a.elector.canReadLease()).toBe(false);
    expect(a.elector.isLeader()).toBe(false);
    expect(JSON.stringify(JSON.parse(warnings.find(isLeaseWarning)!).error)).toMatch(/ECONNREFUSED/);
  });

  it("a standby that can read the Lease held by another is ready to take over", async () => {
    const now = new V1MicroTime();
    await coordination.createNamespacedLease({
      namespace,
      body: {
        metadata: { name: "held" },
        spec: { holderIdentity: "other", leaseDurationSeconds: 60, acquireTime: now, renewTime: now },
      },
    });
    const b = candidate("b", "held");
    await waitFor("b to read the Lease", () => b.elector.canReadLease(), { timeoutMs: 10_000 });
    expect(b.elector.isLeader()).toBe(false);
  });

  it("waits out a lease held by a silent holder, judged on its own clock", async () => {
    // A holder that vanished without releasing: its lease has a fresh renewTime, but never changes.
    const now = new V1MicroTime();
    await coordination.createNamespacedLease({
      namespace,
      body: {
        metadata: { name: "abandoned" },
        spec: {
          holderIdentity: "crashed",
          leaseDurationSeconds: 3,
          acquireTime: now,
          renewTime: now,
          leaseTransitions: 0,
        },
      },
    });
    const startedAt = performance.now();
    const a = candidate("a", "abandoned");
    await waitFor("a to take over the abandoned lease", () => a.elector.isLeader(), { timeoutMs: 20_000 });
    // Not before a full lease duration after a first saw it.
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(3_000);
  });
});
