/**
 * The reconciler's scenarios on in-memory fakes (fakes.ts), in the style of controller-rs's
 * scenario tests: every condition reason a pass can set, the ordering by direction, the restart
 * gates, crash safety of the named action Events, the finalizer, and "a converged pass writes
 * nothing". Milliseconds each; the integration tests run the same code on the real parts.
 */
import { beforeEach, describe, expect, it } from "vitest";
import type { V1ConfigMap, V1Deployment, V1Secret, V1Service } from "@kubernetes/client-node";
import type { PoolPolicy, PoolPolicyStatus } from "../../../src/api/schema.js";
import { FINALIZER } from "../../../src/controller/finalizer.js";
import { PROGRESS_POLL_MS } from "../../../src/controller/pass.js";
import { PoolPolicyReconciler } from "../../../src/controller/reconciler.js";
import { PostgresError } from "../../../src/postgres/connection.js";
import { createLogger } from "../../../src/log.js";
import { deepMerge } from "../../harness/deep-merge.js";
import { FakeEvents, FakeKubernetes, FakePostgres, FakeRedis, T0 } from "./fakes.js";

const NS = "shop";

class World {
  readonly kube = new FakeKubernetes();
  readonly postgres = new FakePostgres();
  readonly redis = new FakeRedis();
  readonly events = new FakeEvents();
  readonly policies = new Map<string, PoolPolicy>();
  now = new Date(T0.getTime() + 60_000);
  reconciler = this.newReconciler();

  constructor() {
    this.kube.secrets.set(`${NS}/pg`, { username: "admin", password: "s3cret" });
    // An annotation written by the reconciler lands in the cache, as the watch would bring it.
    this.kube.onPolicyPatched = (stored) => {
      const cached = this.policies.get(`${stored.metadata.namespace}/${stored.metadata.name}`);
      if (cached) cached.metadata.annotations = stored.metadata.annotations;
    };
  }

  /** A new operator process: nothing in memory, the same world. */
  newReconciler(maxRestartsPerHour = 3): PoolPolicyReconciler {
    return new PoolPolicyReconciler({
      kube: this.kube,
      postgres: this.postgres,
      redis: this.redis,
      events: this.events,
      log: createLogger("silent"),
      getPolicy: (key) => this.policies.get(key),
      listPolicies: () => [...this.policies.values()],
      now: () => this.now,
      statsRefreshMs: 30_000,
      maxRestartsPerHour,
    });
  }

  deployment(name: string, replicas = 1): void {
    this.kube.deployments_.push({
      metadata: { name, namespace: NS, labels: { app: "shop" } },
      spec: { replicas, strategy: { type: "Recreate" } },
    } as unknown as V1Deployment);
  }

  policy(name: string, spec: Record<string, unknown> = {}, annotations: Record<string, string> = {}): void {
    const base = {
      postgres: { host: "pg.db", port: 5432, database: "app", credentialsSecret: { name: "pg" } },
      targets: { selector: { matchLabels: { app: "shop" } } },
      pool: { maxSize: 10 },
    };
    const previous = this.policies.get(`${NS}/${name}`);
    this.policies.set(`${NS}/${name}`, {
      apiVersion: "pooling.dbops.io/v1alpha1",
      kind: "PoolPolicy",
      metadata: {
        name,
        namespace: NS,
        uid: `uid-${name}`,
        generation: (previous?.metadata.generation ?? 0) + 1,
        resourceVersion: String(Math.random()),
        finalizers: [FINALIZER],
        annotations: { ...previous?.metadata.annotations, ...annotations },
      },
      spec: deepMerge(base, spec),
      status: previous?.status,
    } as PoolPolicy);
  }

  /** One pass; the status written lands in the cache, as the watch would bring it. */
  async pass(name = "p"): Promise<{ requeueAfter?: number; status: PoolPolicyStatus }> {
    const key = `${NS}/${name}`;
    const writes = this.kube.statusWrites.length;
    const result = await this.reconciler.reconcile(key);
    const policy = this.policies.get(key);
    if (policy && this.kube.statusWrites.length > writes) {
      policy.status = this.kube.statusWrites.at(-1);
      policy.metadata.resourceVersion = String(Math.random());
    }
    return { ...result, status: this.policies.get(key)?.status ?? {} };
  }

  /** The StatefulSet controller and kubelet: the requested restart happens and rolls out. */
  rollOut(): void {
    this.now = new Date(this.now.getTime() + 10_000);
    this.postgres.restart(this.now);
    this.kube.workload.rolledOut = true;
  }
}

const condition = (status: PoolPolicyStatus, type: string) => status.conditions?.find((c) => c.type === type);
const restartTo = (maxConnections: number | "auto", extra: Record<string, unknown> = {}) => ({
  postgres: { maxConnections, restart: { workload: { name: "postgres", namespace: "db" }, ...extra } },
});

let w: World;
beforeEach(() => {
  w = new World();
  w.deployment("api");
});

describe("a converged policy", () => {
  it("is Ready, and a pass that changes nothing writes nothing", async () => {
    w.policy("p");
    const first = await w.pass();
    expect(condition(first.status, "Ready")).toMatchObject({ status: "True", reason: "Converged" });
    expect(first.status.budget).toMatchObject({ demand: 10 + 3 + 2, capacity: 100, policies: 1 });
    expect(first.requeueAfter).toBe(30_000);
    const writes = w.kube.statusWrites.length;
    await w.pass();
    await w.pass();
    expect(w.kube.statusWrites.length).toBe(writes);
  });

  it("adds the finalizer before anything else, and on deletion removes the env and the finalizer only", async () => {
    w.policy("p");
    w.policies.get(`${NS}/p`)!.metadata.finalizers = [];
    await w.pass();
    expect(w.kube.injected.get("api")).toBe(10);
    w.policies.get(`${NS}/p`)!.metadata.deletionTimestamp = new Date();
    w.policies.get(`${NS}/p`)!.metadata.finalizers = [FINALIZER];
    expect(await w.reconciler.reconcile(`${NS}/p`)).toEqual({});
    expect(w.kube.removedEnv).toEqual(["p"]);
    expect(w.kube.finalizerRemoved).toBe(true);
    expect(w.events.reasons()).toContain("EnvRemoved");
    expect(w.postgres.alters).toEqual([]);
  });

  it("reports an invalid spec and applies nothing", async () => {
    w.policy("p", { pool: { minSize: 50, maxSize: 10 } });
    const { status, requeueAfter } = await w.pass();
    expect(condition(status, "Ready")).toMatchObject({ status: "False", reason: "InvalidSpec" });
    expect(requeueAfter).toBeUndefined();
    expect(w.kube.envCalls).toEqual([]);
  });
});

describe("PostgresReachable and what depends on it", () => {
  it("names a missing Secret or key, and an unreachable server; budget and extensions say why they are Unknown", async () => {
    w.policy("p", { postgres: { credentialsSecret: { name: "nope" } } });
    let { status } = await w.pass();
    expect(condition(status, "PostgresReachable")).toMatchObject({ status: "False", reason: "SecretNotFound" });
    w.policy("p", { postgres: { credentialsSecret: { name: "pg", passwordKey: "pw" } } });
    ({ status } = await w.pass());
    expect(condition(status, "PostgresReachable")).toMatchObject({ reason: "SecretKeyMissing" });
    expect(condition(status, "PostgresReachable")?.message).not.toContain("s3cret");

    w.policy("p", { postgres: { requiredExtensions: ["age"] } });
    w.postgres.reachable = false;
    ({ status } = await w.pass());
    expect(condition(status, "PostgresReachable")).toMatchObject({ status: "False", reason: "ConnectionRefused" });
    expect(condition(status, "BudgetWithinLimits")).toMatchObject({ status: "Unknown", reason: "PostgresUnreachable" });
    expect(condition(status, "ExtensionsReady")).toMatchObject({ status: "Unknown", reason: "PostgresUnreachable" });
    expect(condition(status, "ReaperHealthy")).toMatchObject({ status: "Unknown", reason: "PostgresUnreachable" });
    w.postgres.reachable = true;
    ({ status } = await w.pass());
    expect(condition(status, "PostgresReachable")).toMatchObject({ status: "True", reason: "Connected" });
    expect(condition(status, "ExtensionsReady")).toMatchObject({ status: "False", reason: "ExtensionMissing" });
    w.postgres.installedExtensions = ["age"];
    ({ status } = await w.pass());
    expect(condition(status, "ExtensionsReady")).toMatchObject({ status: "True", reason: "Installed" });
  });

  it("reports an over-committed budget with the number to raise to", async () => {
    w.deployment("web", 20);
    w.policy("p");
    const { status } = await w.pass();
    const budget = condition(status, "BudgetWithinLimits");
    expect(budget).toMatchObject({ status: "False", reason: "OverCommitted" });
    expect(budget?.message).toContain("raise max_connections to at least 215");
    expect(condition(status, "Ready")?.status).toBe("False");
  });
});

describe("max_connections", () => {
  it("raises: announces and runs ALTER SYSTEM and the restart, holds pools the server cannot carry, then verifies once", async () => {
    w.deployment("web", 10);
    w.policy("p", { ...restartTo(200), pool: { maxSize: 10 } });
    let { status, requeueAfter } = await w.pass();
    expect(condition(status, "MaxConnectionsApplied")).toMatchObject({ reason: "RestartInProgress" });
    expect(w.postgres.alters).toEqual([200]);
    expect(w.kube.restartRequests).toBe(1);
    // api 1 × 10 + web 10 × 10 + 5 reserved = 115 > 100 now: the pools wait for the raise.
    expect(w.kube.envCalls.at(-1)).toEqual({ maxSize: 10, holdGrowthUntil: 200 });
    expect(condition(status, "PoolEnvInjected")?.reason).toBe("WaitingForMaxConnections");
    expect(condition(status, "ReaperHealthy")?.reason).toBe("Paused");
    expect(requeueAfter).toBe(500);
    expect(w.events.reasons().slice(0, 2)).toEqual(["MaxConnectionsAltered", "RestartRequested"]);

    ({ status } = await w.pass()); // the rollout has not happened yet: waits, no second request
    expect(w.kube.restartRequests).toBe(1);
    w.rollOut();
    ({ status } = await w.pass());
    expect(condition(status, "MaxConnectionsApplied")).toMatchObject({ status: "True", reason: "Applied" });
    expect(w.kube.envCalls.at(-1)).toEqual({ maxSize: 10, holdGrowthUntil: false });
    expect(condition(status, "Ready")?.status).toBe("True");
    await w.pass();
    expect(w.events.reasons().filter((r) => r === "MaxConnectionsVerified")).toHaveLength(1);
  });

  it("grows pools at once when the current server already carries them, even while the raise waits", async () => {
    w.policy("p", { ...restartTo(300, { policy: "Manual" }), pool: { maxSize: 20 } });
    const { status } = await w.pass();
    expect(condition(status, "MaxConnectionsApplied")?.reason).toBe("AwaitingApproval");
    expect(w.kube.envCalls.at(-1)).toEqual({ maxSize: 20, holdGrowthUntil: false });
    expect(condition(status, "PoolEnvInjected")?.reason).toBe("Injected");
  });

  it("polls a rollout every 2 s where the target watches do not answer for it, and leaves it to them where they do", async () => {
    w.kube.rollingOut = true;
    w.policy("p");
    let { status, requeueAfter } = await w.pass();
    expect(condition(status, "PoolEnvInjected")?.reason).toBe("RollingOut");
    expect(requeueAfter).toBe(2_000);
    w.kube.budgetInputsVersion = () => 1;
    ({ status, requeueAfter } = await w.pass());
    expect(condition(status, "PoolEnvInjected")?.reason).toBe("RollingOut");
    expect(requeueAfter).toBe(30_000); // the stats refresh: the backstop if a watch event were lost
  });

  it("lowers only after the apps rolled out with their smaller pools", async () => {
    w.postgres.maxConnections = 300;
    w.kube.injected.set("api", 50);
    w.kube.rollingOut = true;
    w.policy("p", { ...restartTo(100), pool: { maxSize: 10 } });
    let { status } = await w.pass();
    expect(w.kube.injected.get("api")).toBe(10);
    expect(condition(status, "MaxConnectionsApplied")).toMatchObject({ reason: "WaitingForApps" });
    expect(w.postgres.alters).toEqual([]);
    w.kube.rollingOut = false;
    ({ status } = await w.pass());
    expect(w.postgres.alters).toEqual([100]);
    expect(condition(status, "MaxConnectionsApplied")?.reason).toBe("RestartInProgress");
  });

  it("waits for an approval that names the value, without ALTER SYSTEM, and says how to approve", async () => {
    w.policy("p", restartTo(150, { policy: "Manual" }));
    let { status } = await w.pass();
    expect(condition(status, "MaxConnectionsApplied")?.message).toContain(
      "kubectl annotate poolpolicy p --overwrite pooling.dbops.io/approve-restart=150",
    );
    expect(w.postgres.alters).toEqual([]);
    w.policy("p", restartTo(150, { policy: "Manual" }), { "pooling.dbops.io/approve-restart": "150" });
    ({ status } = await w.pass());
    expect(w.postgres.alters).toEqual([150]);
    expect(w.kube.restartRequests).toBe(1);
  });

  it("outside the maintenance window, changes nothing and comes back when it opens", async () => {
    // T0 is a Monday; the window opens on Wednesday 03:00 UTC.
    w.policy("p", restartTo(150, { maintenanceWindow: { days: ["Wed"], start: "03:00", duration: "1h" } }));
    const { status, requeueAfter } = await w.pass();
    expect(condition(status, "MaxConnectionsApplied")?.reason).toBe("OutsideMaintenanceWindow");
    expect(w.postgres.alters).toEqual([]);
    expect(requeueAfter).toBe(30_000); // the stats refresh comes first; the window is two days out
  });

  it("stops restarting at the limit, holds, warns once, and stays held until a person acts", async () => {
    w.reconciler = w.newReconciler(2);
    w.kube.workload.history = [new Date(w.now.getTime() - 30 * 60_000), new Date(w.now.getTime() - 10 * 60_000)];
    w.policy("p", restartTo(150));
    let { status } = await w.pass();
    expect(condition(status, "MaxConnectionsApplied")).toMatchObject({
      status: "False",
      reason: "RestartLimitReached",
    });
    expect(condition(status, "Ready")).toMatchObject({ status: "False", reason: "RestartLimitReached" });
    expect(w.kube.workload.heldSince).toEqual(w.now);
    expect(w.postgres.alters).toEqual([]);
    expect(w.kube.restartRequests).toBe(0);
    // An hour later the history no longer counts, but the hold stays until it is removed.
    w.now = new Date(w.now.getTime() + 2 * 3_600_000);
    ({ status } = await w.pass());
    expect(condition(status, "MaxConnectionsApplied")?.reason).toBe("RestartLimitReached");
    // Two Warnings, each once: the hold (the action) and the condition's transition.
    expect(w.events.all.filter((e) => e.reason === "RestartsHeld" && e.type === "Warning")).toHaveLength(1);
    expect(w.events.all.filter((e) => e.reason === "RestartLimitReached" && e.type === "Warning")).toHaveLength(1);
    w.kube.workload.heldSince = undefined;
    w.kube.workload.history = [];
    ({ status } = await w.pass());
    expect(w.kube.restartRequests).toBe(1);
  });

  it("after a crash between ALTER SYSTEM and the restart request: no second ALTER, one Event of each, one restart", async () => {
    w.policy("p", restartTo(150));
    w.kube.crashBeforeRestartRequest = true;
    await expect(w.pass()).rejects.toThrow("the operator was killed");
    w.kube.crashBeforeRestartRequest = false;
    w.reconciler = w.newReconciler();
    await w.pass();
    await w.pass();
    expect(w.postgres.alters).toEqual([150]);
    expect(w.kube.restartRequests).toBe(1);
    expect(w.events.all.filter((e) => e.reason === "MaxConnectionsAltered")).toHaveLength(1);
    expect(w.events.all.filter((e) => e.reason === "RestartRequested")).toHaveLength(1);
  });

  it("a second value during the restart: written at once, no second request; Applied only after the rollout", async () => {
    w.policy("p", restartTo(150));
    await w.pass();
    w.policy("p", restartTo(200));
    let { status } = await w.pass();
    expect(w.postgres.alters).toEqual([150, 200]);
    expect(w.kube.restartRequests).toBe(1);
    expect(condition(status, "MaxConnectionsApplied")?.reason).toBe("RestartInProgress");
    // The new pod started with 200 already, but the StatefulSet is still rolling.
    w.postgres.restart(new Date(w.now.getTime() + 1_000));
    ({ status } = await w.pass());
    expect(condition(status, "MaxConnectionsApplied")?.reason).toBe("RestartInProgress");
    w.kube.workload.rolledOut = true;
    ({ status } = await w.pass());
    expect(condition(status, "MaxConnectionsApplied")).toMatchObject({ status: "True", reason: "Applied" });
    expect(w.kube.restartRequests).toBe(1);
  });

  it("says what it cannot do: command line, ALTER SYSTEM off, no privilege, no or missing workload, failed verification", async () => {
    const reasonFor = async (setup: () => void, spec: Record<string, unknown> = restartTo(150)) => {
      w = new World();
      w.deployment("api");
      setup();
      w.policy("p", spec);
      return condition((await w.pass()).status, "MaxConnectionsApplied");
    };
    expect(await reasonFor(() => (w.postgres.settingSource = "command line"))).toMatchObject({
      reason: "CommandLineOverride",
    });
    expect(w.postgres.alters).toEqual([]);
    expect(await reasonFor(() => (w.postgres.allowAlterSystem = false))).toMatchObject({
      reason: "AlterSystemDisabled",
    });
    expect(await reasonFor(() => (w.postgres.mayAlter = false))).toMatchObject({ reason: "PermissionDenied" });
    expect(await reasonFor(() => undefined, { postgres: { maxConnections: 150 } })).toMatchObject({
      reason: "RestartRequired",
    });
    expect(w.postgres.alters).toEqual([150]); // no workload: written for the restart the user makes
    expect(await reasonFor(() => (w.kube.workload.found = false))).toMatchObject({ reason: "WorkloadNotFound" });
    expect(w.postgres.alters).toEqual([]);
    expect(
      await reasonFor(() => {
        w.kube.workload.record = { value: 150, after: T0 };
        w.postgres.postmasterStartTime = new Date(T0.getTime() + 5_000);
      }),
    ).toMatchObject({ reason: "VerificationFailed" });
    expect(await reasonFor(() => undefined, { postgres: { maxConnections: 100 } })).toMatchObject({
      status: "True",
      reason: "Applied",
    });
    expect(await reasonFor(() => undefined, {})).toMatchObject({ status: "True", reason: "NotManaged" });
    expect(
      await reasonFor(() => (w.postgres.alterError = new PostgresError("ServerShuttingDown", "shutting down"))),
    ).toMatchObject({ status: "Unknown", reason: "PostgresUnreachable" });
    expect(await reasonFor(() => (w.postgres.alterError = new Error("disk full")))).toMatchObject({
      reason: "AlterSystemFailed",
    });
  });

  it("two explicit values on one server are a Conflict on both; auto without the server is Unknown", async () => {
    w.policy("a", restartTo(150));
    w.policy("b", restartTo(160));
    for (const name of ["a", "b"]) {
      const { status } = await w.pass(name);
      expect(condition(status, "MaxConnectionsApplied")).toMatchObject({ status: "False", reason: "Conflict" });
    }
    expect(w.postgres.alters).toEqual([]);
    w.policies.clear();
    w.postgres.reachable = false;
    w.policy("p", restartTo("auto"));
    const { status } = await w.pass();
    expect(condition(status, "MaxConnectionsApplied")).toMatchObject({
      status: "Unknown",
      reason: "AutoSizingUnavailable",
    });
  });
});

describe("max_connections through a CloudNativePG Cluster", () => {
  const cluster = { kind: "Cluster", apiVersion: "postgresql.cnpg.io/v1", name: "pg", namespace: "db" };
  const throughCluster = (maxConnections: number, extra: Record<string, unknown> = {}) => ({
    postgres: { maxConnections, restart: { workload: cluster, ...extra } },
  });
  /** CloudNativePG as it is set up: ALTER SYSTEM off, no privilege for it, the value from its conf file. */
  const cnpgServer = () => {
    w.postgres.allowAlterSystem = false;
    w.postgres.mayAlter = false;
    w.postgres.settingSource = "configuration file";
  };
  /** CloudNativePG restarts the instances with the Cluster's parameter and reports a healthy cluster again. */
  const cnpgRestarts = (healthy = true) => {
    w.now = new Date(w.now.getTime() + 10_000);
    w.postgres.maxConnections = Number(w.kube.workload.cluster.maxConnections);
    w.postgres.postmasterStartTime = w.now;
    if (healthy) w.kube.workload.cluster = { ...w.kube.workload.cluster, phase: "Cluster in healthy state" };
  };
  const applied = (status: PoolPolicyStatus) => condition(status, "MaxConnectionsApplied");

  beforeEach(cnpgServer);

  it("sets the Cluster's parameter (no ALTER SYSTEM), says what CloudNativePG reports, verifies once after its restart", async () => {
    w.policy("p", throughCluster(150));
    let { status } = await w.pass();
    expect(w.kube.ownerApplies).toEqual([150]);
    expect(w.postgres.alters).toEqual([]);
    expect(w.kube.restartRequests).toBe(1);
    expect(w.kube.workload.record).toEqual({ value: 150, after: T0 });
    expect(applied(status)).toMatchObject({ status: "False", reason: "RestartInProgress" });
    expect(applied(status)?.message).toContain("CloudNativePG Cluster db/pg; CloudNativePG restarts the instances");
    expect(w.events.all.find((e) => e.reason === "RestartRequested")?.note).toBe(
      "spec.postgresql.parameters.max_connections = 150 on CloudNativePG Cluster db/pg; CloudNativePG restarts the instances",
    );
    ({ status } = await w.pass());
    expect(applied(status)?.message).toContain('it reports phase "Applying configuration": Restarting instances');
    expect(w.kube.ownerApplies).toEqual([150]);
    // The primary is back with the new value, but CloudNativePG has not finished with the Cluster.
    cnpgRestarts(false);
    ({ status } = await w.pass());
    expect(applied(status)).toMatchObject({ reason: "RestartInProgress" });
    expect(applied(status)?.message).toContain("CloudNativePG is still restarting CloudNativePG Cluster db/pg");
    w.kube.workload.cluster.phase = "Cluster in healthy state";
    ({ status } = await w.pass());
    expect(applied(status)).toMatchObject({ status: "True", reason: "Applied" });
    expect(applied(status)?.message).toContain("verified after CloudNativePG restarted it");
    await w.pass();
    expect(w.events.reasons().filter((r) => r === "MaxConnectionsVerified")).toHaveLength(1);
    expect(w.kube.restartRequests).toBe(1);
    expect(w.kube.ownerApplies).toEqual([150]);
  });

  it("lowers only after the apps rolled out with their smaller pools", async () => {
    w.postgres.maxConnections = 300;
    w.kube.workload.cluster.maxConnections = "300";
    w.kube.injected.set("api", 50);
    w.kube.rollingOut = true;
    w.policy("p", { ...throughCluster(100), pool: { maxSize: 10 } });
    let { status } = await w.pass();
    expect(applied(status)?.reason).toBe("WaitingForApps");
    expect(w.kube.ownerApplies).toEqual([]);
    w.kube.rollingOut = false;
    ({ status } = await w.pass());
    expect(w.kube.ownerApplies).toEqual([100]);
    expect(applied(status)?.reason).toBe("RestartInProgress");
  });

  it("waits for a Manual approval and for the maintenance window without touching the Cluster", async () => {
    w.policy("p", throughCluster(150, { policy: "Manual" }));
    let { status } = await w.pass();
    expect(applied(status)).toMatchObject({ reason: "AwaitingApproval" });
    expect(applied(status)?.message).toContain("needs a restart of CloudNativePG Cluster db/pg");
    expect(w.kube.ownerApplies).toEqual([]);
    w.policy("p", throughCluster(150, { policy: "Manual" }), { "pooling.dbops.io/approve-restart": "150" });
    ({ status } = await w.pass());
    expect(w.kube.ownerApplies).toEqual([150]);

    w = new World();
    cnpgServer();
    // T0 is a Monday; the window opens on Wednesday 03:00 UTC.
    w.policy("p", throughCluster(150, { maintenanceWindow: { days: ["Wed"], start: "03:00", duration: "1h" } }));
    ({ status } = await w.pass());
    expect(applied(status)?.reason).toBe("OutsideMaintenanceWindow");
    expect(w.kube.ownerApplies).toEqual([]);
  });

  it("holds at the restart limit and names the Cluster's full resource in the release command", async () => {
    w.reconciler = w.newReconciler(2);
    w.kube.workload.history = [new Date(w.now.getTime() - 30 * 60_000), new Date(w.now.getTime() - 10 * 60_000)];
    w.policy("p", throughCluster(150));
    const { status } = await w.pass();
    expect(applied(status)).toMatchObject({ reason: "RestartLimitReached" });
    expect(applied(status)?.message).toContain("kubectl annotate clusters.postgresql.cnpg.io pg -n db");
    expect(w.kube.workload.heldSince).toEqual(w.now);
    expect(w.kube.ownerApplies).toEqual([]);
  });

  it("after a crash between the record and the parameter: the next pass sets the parameter, one request, one Event", async () => {
    w.policy("p", throughCluster(150));
    w.kube.crashAfterRestartRequest = true;
    await expect(w.pass()).rejects.toThrow("the operator was killed");
    w.kube.crashAfterRestartRequest = false;
    expect(w.kube.ownerApplies).toEqual([]);
    w.reconciler = w.newReconciler();
    const { status } = await w.pass();
    expect(w.kube.ownerApplies).toEqual([150]);
    expect(applied(status)?.reason).toBe("RestartInProgress");
    await w.pass();
    expect(w.kube.restartRequests).toBe(1);
    expect(w.kube.ownerApplies).toEqual([150]);
    expect(w.events.all.filter((e) => e.reason === "RestartRequested")).toHaveLength(1);
  });

  it("a second value during CloudNativePG's restart is asked for once that restart is verified", async () => {
    w.policy("p", throughCluster(150));
    await w.pass();
    w.policy("p", throughCluster(200));
    let { status } = await w.pass();
    expect(applied(status)?.message).toContain("max_connections = 200 is asked for once that restart is verified");
    expect(w.kube.ownerApplies).toEqual([150]);
    cnpgRestarts();
    ({ status } = await w.pass());
    expect(w.kube.ownerApplies).toEqual([150, 200]);
    expect(w.kube.restartRequests).toBe(2);
    cnpgRestarts();
    ({ status } = await w.pass());
    expect(applied(status)).toMatchObject({ status: "True", reason: "Applied" });
  });

  it("says what it cannot do: a missing Cluster, a busy one, another field manager, a failed verification", async () => {
    const reasonFor = async (setup: () => void) => {
      w = new World();
      cnpgServer();
      setup();
      w.policy("p", throughCluster(150));
      return applied((await w.pass()).status);
    };
    expect(await reasonFor(() => (w.kube.workload.found = false))).toMatchObject({ reason: "WorkloadNotFound" });
    expect(w.kube.ownerApplies).toEqual([]);
    const busy = await reasonFor(() => (w.kube.workload.cluster.phase = "Upgrading cluster"));
    expect(busy).toMatchObject({ reason: "OwnerBusy" });
    expect(busy?.message).toContain('phase "Upgrading cluster"');
    expect(w.events.all.find((e) => e.reason === "OwnerBusy")?.type).toBe("Normal"); // under way, not broken
    expect(w.kube.ownerApplies).toEqual([]);
    const conflict = await reasonFor(() => (w.kube.workload.cluster.otherManagers = ["argocd-controller"]));
    expect(conflict).toMatchObject({ status: "False", reason: "ParameterConflict" });
    expect(conflict?.message).toContain(
      'field manager "argocd-controller" owns spec.postgresql.parameters.max_connections',
    );
    const forbidden = Object.assign(new Error("forbidden"), { code: 403 });
    const unreadable = await reasonFor(() => (w.kube.workloadReadError = forbidden));
    expect(unreadable).toMatchObject({ status: "False", reason: "WorkloadForbidden" });
    expect(unreadable?.message).toContain(
      "the operator may not read CloudNativePG Cluster db/pg (HTTP 403): grant the operator get and patch on clusters.postgresql.cnpg.io (Helm chart: --set postgresOperators.cloudnativePG.enabled=true)",
    );
    const unpatchable = await reasonFor(() => (w.kube.workload.cluster.applyError = forbidden));
    expect(unpatchable).toMatchObject({ reason: "WorkloadForbidden" });
    expect(unpatchable?.message).toContain("the operator may not patch CloudNativePG Cluster db/pg");
    const failed = await reasonFor(() => {
      w.kube.workload.record = { value: 150, after: T0 };
      w.kube.workload.cluster.maxConnections = "150";
      w.postgres.postmasterStartTime = new Date(T0.getTime() + 5_000);
    });
    expect(failed).toMatchObject({ reason: "VerificationFailed" });
    expect(failed?.message).toContain("CloudNativePG restarted PostgreSQL");
    expect(w.kube.ownerApplies).toEqual([]);
    // A request whose value someone took back off the Cluster is not waited for: asked again, through the gate.
    const reverted = await reasonFor(() => {
      w.kube.workload.record = { value: 120, after: T0 };
      w.kube.workload.cluster.maxConnections = "100";
    });
    expect(reverted).toMatchObject({ reason: "RestartInProgress" });
    expect(w.kube.ownerApplies).toEqual([150]);
  });

  it("while the primary is away during the restart: in progress, not a verdict", async () => {
    w.policy("p", throughCluster(150));
    await w.pass();
    w.postgres.reachable = false;
    const { status } = await w.pass();
    expect(applied(status)).toMatchObject({ status: "Unknown", reason: "RestartInProgress" });
  });
});

describe("max_connections through a Zalando postgresql", () => {
  const zalando = { kind: "postgresql", apiVersion: "acid.zalan.do/v1", name: "pg", namespace: "db" };
  const throughPostgresql = (maxConnections: number, extra: Record<string, unknown> = {}) => ({
    postgres: { maxConnections, restart: { workload: zalando, ...extra } },
  });
  /**
   * A Patroni member as Zalando's operator runs it: max_connections on the postgres command line
   * (so ALTER SYSTEM, which the superuser may run, would change nothing), status "Running".
   */
  const patroniServer = () => {
    w.postgres.settingSource = "command line";
    w.kube.workload.cluster = { maxConnections: "100", phase: "Running", applyingPhase: "Updating" };
  };
  /** Zalando's operator patched Patroni, which restarted the member with the new value; "Running" again. */
  const zalandoRestarts = (running = true) => {
    w.now = new Date(w.now.getTime() + 10_000);
    w.postgres.maxConnections = Number(w.kube.workload.cluster.maxConnections);
    w.postgres.postmasterStartTime = w.now;
    if (running) w.kube.workload.cluster = { ...w.kube.workload.cluster, phase: "Running" };
  };
  const applied = (status: PoolPolicyStatus) => condition(status, "MaxConnectionsApplied");

  beforeEach(patroniServer);

  it("sets the postgresql's parameter despite the command line (no ALTER SYSTEM), quotes its status, verifies once", async () => {
    w.policy("p", throughPostgresql(150));
    let { status } = await w.pass();
    expect(applied(status)).toMatchObject({ status: "False", reason: "RestartInProgress" });
    expect(w.kube.ownerApplies).toEqual([150]);
    expect(w.postgres.alters).toEqual([]);
    expect(w.kube.workload.record).toEqual({ value: 150, after: T0 });
    expect(applied(status)?.message).toContain(
      "set on Zalando postgresql db/pg; Zalando's postgres-operator restarts the instances",
    );
    expect(w.events.all.find((e) => e.reason === "RestartRequested")?.note).toBe(
      "spec.postgresql.parameters.max_connections = 150 on Zalando postgresql db/pg; Zalando's postgres-operator restarts the instances",
    );
    ({ status } = await w.pass());
    expect(applied(status)?.message).toContain('it reports PostgresClusterStatus "Updating"');
    // The primary is back with the new value; the operator still restarts the other members.
    zalandoRestarts(false);
    ({ status } = await w.pass());
    expect(applied(status)).toMatchObject({ reason: "RestartInProgress" });
    expect(applied(status)?.message).toContain(`waiting until it reports status.PostgresClusterStatus "Running"`);
    w.kube.workload.cluster.phase = "Running";
    ({ status } = await w.pass());
    expect(applied(status)).toMatchObject({ status: "True", reason: "Applied" });
    expect(applied(status)?.message).toContain("verified after Zalando's postgres-operator restarted it");
    await w.pass();
    expect(w.events.reasons().filter((r) => r === "MaxConnectionsVerified")).toHaveLength(1);
    expect(w.kube.restartRequests).toBe(1);
    expect(w.kube.ownerApplies).toEqual([150]);
  });

  it("lowers only after the apps rolled out, and the gates hold it without touching the postgresql", async () => {
    w.postgres.maxConnections = 300;
    w.kube.workload.cluster.maxConnections = "300";
    w.kube.injected.set("api", 50);
    w.kube.rollingOut = true;
    w.policy("p", { ...throughPostgresql(100), pool: { maxSize: 10 } });
    let { status } = await w.pass();
    expect(applied(status)?.reason).toBe("WaitingForApps");
    expect(w.kube.ownerApplies).toEqual([]);
    w.kube.rollingOut = false;
    ({ status } = await w.pass());
    expect(w.kube.ownerApplies).toEqual([100]);

    w = new World();
    patroniServer();
    w.policy("p", throughPostgresql(150, { policy: "Manual" }));
    ({ status } = await w.pass());
    expect(applied(status)).toMatchObject({ reason: "AwaitingApproval" });
    expect(applied(status)?.message).toContain("needs a restart of Zalando postgresql db/pg");
    expect(w.kube.ownerApplies).toEqual([]);

    w = new World();
    patroniServer();
    w.reconciler = w.newReconciler(1);
    w.kube.workload.history = [new Date(w.now.getTime() - 10 * 60_000)];
    w.policy("p", throughPostgresql(150));
    ({ status } = await w.pass());
    expect(applied(status)).toMatchObject({ reason: "RestartLimitReached" });
    expect(applied(status)?.message).toContain("kubectl annotate postgresqls.acid.zalan.do pg -n db");
    expect(w.kube.ownerApplies).toEqual([]);
  });

  it("says what it cannot do: a failed sync, RBAC, another field manager, a failed verification", async () => {
    const reasonFor = async (setup: () => void) => {
      w = new World();
      patroniServer();
      setup();
      w.policy("p", throughPostgresql(150));
      return applied((await w.pass()).status);
    };
    const busy = await reasonFor(() => (w.kube.workload.cluster.phase = "SyncFailed"));
    expect(busy).toMatchObject({ reason: "OwnerBusy" });
    expect(busy?.message).toContain(
      `Zalando's postgres-operator is busy with Zalando postgresql db/pg (PostgresClusterStatus "SyncFailed")`,
    );
    expect(w.kube.ownerApplies).toEqual([]);
    const forbidden = Object.assign(new Error("forbidden"), { code: 403 });
    const unreadable = await reasonFor(() => (w.kube.workloadReadError = forbidden));
    expect(unreadable).toMatchObject({ status: "False", reason: "WorkloadForbidden" });
    expect(unreadable?.message).toContain(
      "the operator may not read Zalando postgresql db/pg (HTTP 403): grant the operator get and patch on postgresqls.acid.zalan.do (Helm chart: --set postgresOperators.zalando.enabled=true)",
    );
    const conflict = await reasonFor(() => (w.kube.workload.cluster.otherManagers = ["kubectl-client-side-apply"]));
    expect(conflict).toMatchObject({ reason: "ParameterConflict" });
    expect(conflict?.message).toContain(`field manager "kubectl-client-side-apply" owns`);
    const failed = await reasonFor(() => {
      w.kube.workload.record = { value: 150, after: T0 };
      w.kube.workload.cluster.maxConnections = "150";
      w.postgres.postmasterStartTime = new Date(T0.getTime() + 5_000);
    });
    expect(failed).toMatchObject({ reason: "VerificationFailed" });
    expect(failed?.message).toContain("source: command line; Patroni passes the value on the postgres command line");
  });
});

describe("the reaper and Redis", () => {
  it("reaps when due and announces it; reports disabled, failures and the server timeout", async () => {
    w.policy("p", { reaper: { interval: "60s" } });
    w.postgres.reaped = 2;
    let { status, requeueAfter } = await w.pass();
    expect(condition(status, "ReaperHealthy")).toMatchObject({ status: "True", reason: "Running" });
    expect(w.events.reasons()).toContain("SessionsReaped");
    expect(requeueAfter).toBe(30_000);

    w.policy("p", { reaper: { enabled: false } });
    ({ status } = await w.pass());
    expect(condition(status, "ReaperHealthy")?.reason).toBe("Disabled");

    w.policy("p", { reaper: { enabled: true, mode: "ServerTimeout" } });
    ({ status } = await w.pass());
    expect(condition(status, "ReaperHealthy")?.reason).toBe("ServerTimeout");
    w.postgres.timeoutError = new Error("permission denied to set parameter");
    ({ status } = await w.pass());
    expect(condition(status, "ReaperHealthy")).toMatchObject({ status: "False", reason: "ServerTimeoutFailed" });

    w = new World();
    w.deployment("api");
    w.postgres.reaperError = new Error("canceling statement due to statement timeout");
    w.policy("p");
    ({ status } = await w.pass());
    expect(condition(status, "ReaperHealthy")).toMatchObject({ status: "False", reason: "ReapFailed" });
  });

  it("hands the spec's idle-in-transaction timeout, parsed once, to both PostgreSQL's timeout and the reaper", async () => {
    w.policy("p", { reaper: { mode: "Both", idleInTransactionTimeout: "2m30s" } });
    const { status } = await w.pass();
    expect(w.postgres.timeoutsMs).toEqual({ server: [150_000], reaper: [150_000] });
    expect(condition(status, "ReaperHealthy")).toMatchObject({ status: "True", reason: "Running" });
  });

  it("a required Redis that is down makes the policy not Ready; an optional one only warns", async () => {
    w.redis.outcome = {
      required: true,
      condition: { status: "False", reason: "RedisUnavailable", message: "ECONNREFUSED" },
    };
    w.policy("p", { redis: { urlSecret: { name: "redis", key: "url" }, required: true } });
    let { status } = await w.pass();
    expect(condition(status, "Ready")).toMatchObject({ status: "False", reason: "RedisUnavailable" });
    w.redis.outcome = { ...w.redis.outcome, required: false };
    w.policy("p", { redis: { urlSecret: { name: "redis", key: "url" }, required: false } });
    ({ status } = await w.pass());
    expect(condition(status, "RedisAvailable")?.reason).toBe("RedisUnavailable");
    expect(condition(status, "Ready")?.status).toBe("True");
  });
});

describe("Events", () => {
  it("tells each condition transition once, even when the cache has not caught up with our write", async () => {
    w.deployment("web", 20);
    w.policy("p");
    const key = `${NS}/p`;
    await w.reconciler.reconcile(key); // the status write does not reach the cache
    const first = w.events.all.filter((e) => e.reason === "OverCommitted").length;
    await w.reconciler.reconcile(key);
    await w.reconciler.reconcile(key);
    expect(first).toBe(1);
    expect(w.events.all.filter((e) => e.reason === "OverCommitted")).toHaveLength(1);
    expect(w.kube.statusWrites).toHaveLength(1);
  });
});

describe("the memory ceiling", () => {
  // A 2 GiB container with PostgreSQL's default settings: 128 MiB shared_buffers + 3 × 64 MiB
  // autovacuum + 64 MiB overhead = 384 MiB, then 4 MiB + 4 MiB work_mem per connection:
  // (2048 − 384) / 8 = 208 connections fit.
  beforeEach(() => {
    w.kube.workload.memoryLimit = "2Gi";
    w.deployment("web", 20); // api 1 × 10 + web 20 × 10 + 5 reserved = 215 at worst
  });

  it("auto sizes up to what fits, not to demand + headroom, and says memory is the binding bound", async () => {
    w.policy("p", restartTo("auto"));
    let { status } = await w.pass();
    expect(w.postgres.alters).toEqual([208]); // 215 + 20 % would be 260
    expect(condition(status, "MemoryWithinLimits")).toMatchObject({ status: "True", reason: "WithinMemory" });
    expect(condition(status, "MemoryWithinLimits")?.message).toContain(
      "max_connections 208 ≤ 208 that fit in the memory limit 2 GiB of container postgres in StatefulSet db/postgres",
    );
    expect(status.budget).toMatchObject({ demand: 215, memoryCeiling: 208 });
    w.rollOut();
    ({ status } = await w.pass());
    expect(condition(status, "MaxConnectionsApplied")).toMatchObject({ status: "True", reason: "Applied" });
    const budget = condition(status, "BudgetWithinLimits");
    expect(budget).toMatchObject({ status: "False", reason: "OverCommitted" });
    expect(budget?.message).toContain("worst-case demand 215 > max_connections 208");
    expect(budget?.message).toContain("the binding bound is memory: 208 connections fit in the memory limit 2 GiB");
    expect(budget?.message).toContain(
      "lower the pools, give PostgreSQL more memory, or put a connection pooler in front",
    );
    const reads = w.kube.workloadReads;
    await w.pass();
    expect(w.postgres.alters).toEqual([208]); // stays there: no second restart
    // The ceiling and the max_connections step share one GET of the workload per pass.
    expect(w.kube.workloadReads - reads).toBe(1);
  });

  it("names spec.budget.ceiling as the binding bound when it is lower than what memory carries", async () => {
    w.policy("p", { ...restartTo("auto"), budget: { ceiling: 150 } });
    await w.pass();
    w.rollOut();
    const { status } = await w.pass();
    expect(w.postgres.alters).toEqual([150]);
    expect(condition(status, "BudgetWithinLimits")?.message).toContain(
      "the binding bound is spec.budget.ceiling (150), and memory after it: raising the ceiling gains up to the 208 connections that fit",
    );
    w.kube.deployments_ = w.kube.deployments_.filter((d) => d.metadata?.name !== "web");
    w.deployment("web", 15); // 10 + 150 + 5 = 165: above the spec's ceiling, within memory
    const next = await w.pass();
    expect(condition(next.status, "BudgetWithinLimits")?.message).toContain(
      "the binding bound is spec.budget.ceiling (150): raise it to at least 165, or lower the pools",
    );
  });

  it("applies an explicit value above the ceiling, with a Warning that names the numbers and what to do", async () => {
    w.policy("p", restartTo(500));
    const { status } = await w.pass();
    expect(w.postgres.alters).toEqual([500]);
    const memory = condition(status, "MemoryWithinLimits");
    expect(memory).toMatchObject({ status: "False", reason: "AboveMemoryCeiling" });
    expect(memory?.message).toContain("max_connections 500 > 208 that fit in the memory limit 2 GiB");
    expect(memory?.message).toContain("500 connections would need 4.3 GiB"); // 384 MiB + 500 × 8 MiB
    expect(memory?.message).toContain(
      "lower the pools, give PostgreSQL more memory, or put a connection pooler in front",
    );
    const warning = w.events.all.find((e) => e.reason === "AboveMemoryCeiling");
    expect(warning).toMatchObject({ type: "Warning" });
    expect(condition(status, "Ready")?.status).toBe("False");
  });

  it("every policy of the server reads the ceiling from the workload one of them names", async () => {
    w.policy("a", restartTo("auto"));
    w.policy("b", {});
    const a = (await w.pass("a")).status;
    const b = (await w.pass("b")).status;
    expect(a.budget?.memoryCeiling).toBe(208);
    expect(b.budget?.memoryCeiling).toBe(208);
    expect(condition(b, "MemoryWithinLimits")).toMatchObject({ status: "True", reason: "WithinMemory" });
    // A workload the operator may not read leaves the ceiling unknown; the pass goes on.
    w.kube.workloadReadError = new Error('statefulsets.apps "postgres" is forbidden');
    const unreadable = (await w.pass("b")).status;
    expect(condition(unreadable, "MemoryWithinLimits")).toMatchObject({
      status: "Unknown",
      reason: "WorkloadUnreadable",
      message: `cannot read the workload named by ${NS}/a (statefulsets.apps "postgres" is forbidden): the memory ceiling is not known`,
    });
    expect(unreadable.budget?.memoryCeiling).toBeUndefined();
  });

  it("says Unknown, and why, without holding Ready back or raising an Event: no workload, no limit", async () => {
    w.kube.deployments_ = w.kube.deployments_.filter((d) => d.metadata?.name !== "web");
    w.policy("p");
    let { status } = await w.pass();
    expect(condition(status, "MemoryWithinLimits")).toMatchObject({ status: "Unknown", reason: "NoWorkload" });
    expect(condition(status, "Ready")?.status).toBe("True");
    expect(status.budget?.memoryCeiling).toBeUndefined();
    w.kube.workload.memoryLimit = undefined;
    w.policy("p", restartTo(100));
    ({ status } = await w.pass());
    expect(condition(status, "MemoryWithinLimits")).toMatchObject({ status: "Unknown", reason: "NoMemoryLimit" });
    expect(condition(status, "MemoryWithinLimits")?.message).toContain("set resources.limits.memory");
    expect(condition(status, "Ready")?.status).toBe("True");
    expect(w.events.reasons().filter((r) => r === "NoWorkload" || r === "NoMemoryLimit")).toEqual([]);
  });
});

describe("the app role's CONNECTION LIMIT (spec.enforcement.connectionLimit)", () => {
  const enforce = (role: string, margin = 2, pool = 10) => ({
    pool: { maxSize: pool },
    enforcement: { connectionLimit: { role, margin } },
  });
  const role = (name: string, r: { superuser?: boolean; connectionLimit?: number; connections?: number } = {}) =>
    w.postgres.roles.set(name, { superuser: false, connectionLimit: -1, connections: 0, ...r });
  const deleting = (name: string) => {
    const p = w.policies.get(`${NS}/${name}`)!;
    p.metadata.deletionTimestamp = new Date();
  };
  /** The order in which the role's limit and the pool env were written. */
  const order: string[] = [];
  beforeEach(() => {
    order.length = 0;
    const setLimit = w.postgres.setConnectionLimit.bind(w.postgres);
    w.postgres.setConnectionLimit = async (t, name, limit) => {
      await setLimit(t, name, limit);
      order.push(`limit ${limit}`);
    };
    const applyEnv = w.kube.applyPoolEnv.bind(w.kube);
    w.kube.applyPoolEnv = async (policy, spec, ...rest) => {
      order.push(`env ${spec.pool.maxSize}`);
      return applyEnv(policy, spec, ...rest);
    };
  });

  it("records the old limit first, and sets a limit on a role that had none once the apps rolled out", async () => {
    role("shop_app", { connections: 3 });
    w.kube.rollingOut = true;
    w.policy("p", enforce("shop_app"));
    let { status } = await w.pass();
    expect(condition(status, "RoleConnectionLimit")).toMatchObject({ status: "False", reason: "WaitingForApps" });
    expect(condition(status, "RoleConnectionLimit")?.message).toBe(
      'lowering the CONNECTION LIMIT of role "shop_app" from no limit to 12 (worst-case demand 10 of policy shop/p + margin 2) once the apps of shop/p run with their new pools',
    );
    expect(w.postgres.roleLimits).toEqual([]);
    // Recorded at once, before any ALTER ROLE: a crash in between loses nothing.
    expect(w.kube.limitRecords).toEqual([{ role: "shop_app", before: -1 }]);

    w.kube.rollingOut = false;
    ({ status } = await w.pass());
    expect(w.kube.limitRecords).toHaveLength(1);
    expect(w.postgres.roleLimits).toEqual([{ role: "shop_app", limit: 12 }]);
    expect(condition(status, "RoleConnectionLimit")).toMatchObject({
      status: "True",
      reason: "Enforced",
      message:
        'role "shop_app" has CONNECTION LIMIT 12 (worst-case demand 10 of policy shop/p + margin 2; 3 session(s) now)',
    });
    expect(status.connectionLimit).toEqual({
      role: "shop_app",
      limit: 12,
      demand: 10,
      policies: 1,
      current: 12,
      connections: 3,
      before: -1,
    });
    expect(w.events.reasons()).toContain("ConnectionLimitSet");
    const writes = w.kube.statusWrites.length;
    await w.pass();
    expect(w.postgres.roleLimits).toHaveLength(1);
    expect(w.kube.statusWrites).toHaveLength(writes);
  });

  it("raises the limit before the pools grow, at once; an HPA's maxReplicas raises it without a rollout", async () => {
    role("shop_app", { connectionLimit: 12 });
    w.policy("p", enforce("shop_app"), {
      "pooling.dbops.io/connection-limit-before": '{"role":"shop_app","before":-1}',
    });
    await w.pass();
    expect(w.postgres.roleLimits).toEqual([]);

    w.kube.rollingOut = true;
    w.policy("p", enforce("shop_app", 2, 20));
    order.length = 0;
    await w.pass();
    expect(order).toEqual(["limit 22", "env 20"]);
    expect(w.events.reasons()).toContain("ConnectionLimitRaised");

    w.kube.hpas_ = [{ spec: { scaleTargetRef: { kind: "Deployment", name: "api" }, maxReplicas: 4 } } as never];
    const { status } = await w.pass();
    expect(w.postgres.roleLimits.at(-1)).toEqual({ role: "shop_app", limit: 4 * 20 + 2 });
    expect(w.kube.limitRecords).toEqual([]); // the record from the first change is kept, not overwritten
    expect(status.connectionLimit?.before).toBe(-1);
  });

  it("lowers only after the apps rolled out with their smaller pools", async () => {
    role("shop_app", { connectionLimit: 52 });
    w.policy("p", enforce("shop_app", 2, 10), {
      "pooling.dbops.io/connection-limit-before": '{"role":"shop_app","before":40}',
    });
    w.kube.rollingOut = true;
    let { status } = await w.pass();
    expect(condition(status, "RoleConnectionLimit")?.reason).toBe("WaitingForApps");
    expect(w.postgres.roleLimits).toEqual([]);
    w.kube.rollingOut = false;
    ({ status } = await w.pass());
    expect(order.at(-1)).toBe("limit 12");
    expect(w.events.reasons()).toContain("ConnectionLimitLowered");
    expect(status.connectionLimit?.before).toBe(40);
  });

  it("two policies naming one role add up, whichever is reconciled; a lowering waits for the other's apps too", async () => {
    role("shop_app");
    w.kube.deployments_.push({
      metadata: { name: "web", namespace: NS, labels: { app: "web" } },
      spec: { replicas: 2, strategy: { type: "Recreate" } },
    } as unknown as V1Deployment);
    w.policy("p", enforce("shop_app", 2, 10));
    w.policy("q", { ...enforce("shop_app", 3, 5), targets: { selector: { matchLabels: { app: "web" } } } });
    // q's apps have not rolled out yet (no PoolEnvInjected=True for its generation).
    let { status } = await w.pass("p");
    expect(condition(status, "RoleConnectionLimit")?.message).toContain("once the apps of shop/q run");
    ({ status } = await w.pass("q"));
    expect(w.postgres.roleLimits).toEqual([{ role: "shop_app", limit: 10 + 2 + 2 * 5 + 3 }]);
    ({ status } = await w.pass("p"));
    expect(w.postgres.roleLimits).toHaveLength(1);
    expect(status.connectionLimit).toMatchObject({ limit: 25, demand: 20, policies: 2 });
    expect(condition(status, "RoleConnectionLimit")?.message).toContain(
      "worst-case demand 20 of 2 policies + margin 5",
    );
  });

  it("refuses a superuser, the operator's own login and a missing role, touching none; Unknown without the server; says what a refused ALTER ROLE needs", async () => {
    role("admin_app", { superuser: true });
    role("operator");
    const cases: [string, string, string][] = [
      ["admin_app", "RoleIsSuperuser", "PostgreSQL ignores CONNECTION LIMIT for superusers"],
      ["operator", "OperatorRole", "could lock the operator out"],
      ["nobody", "RoleNotFound", 'role "nobody" does not exist on pg.db:5432: create it'],
    ];
    for (const [name, reason, words] of cases) {
      w.policy("p", enforce(name));
      const { status } = await w.pass();
      expect(condition(status, "RoleConnectionLimit")).toMatchObject({ status: "False", reason });
      expect(condition(status, "RoleConnectionLimit")?.message).toContain(words);
      expect(condition(status, "Ready")?.status).toBe("False");
    }
    expect(w.postgres.roleLimits).toEqual([]);
    expect(w.kube.limitRecords).toEqual([]);

    w.postgres.reachable = false;
    w.policy("p", enforce("admin_app"));
    expect(condition((await w.pass()).status, "RoleConnectionLimit")).toMatchObject({
      status: "Unknown",
      reason: "PostgresUnreachable",
    });
    w.postgres.reachable = true;

    role("shop_app");
    w.postgres.alterRoleError = new PostgresError("PermissionDenied", "permission denied to alter role", "42501");
    w.policy("p", enforce("shop_app"));
    const { status } = await w.pass();
    expect(condition(status, "RoleConnectionLimit")).toMatchObject({ status: "False", reason: "PermissionDenied" });
    expect(condition(status, "RoleConnectionLimit")?.message).toContain("needs CREATEROLE");
  });

  it("a role at its limit is a Warning and a condition, not a reason to take Ready away", async () => {
    role("shop_app", { connectionLimit: 12, connections: 12 });
    w.policy("p", enforce("shop_app"), {
      "pooling.dbops.io/connection-limit-before": '{"role":"shop_app","before":-1}',
    });
    const { status } = await w.pass();
    expect(condition(status, "RoleConnectionLimit")).toMatchObject({ status: "False", reason: "LimitReached" });
    expect(condition(status, "RoleConnectionLimit")?.message).toContain('new sessions of "shop_app" are refused');
    expect(condition(status, "Ready")?.status).toBe("True");
    expect(w.events.all.filter((e) => e.reason === "LimitReached").map((e) => e.type)).toEqual(["Warning"]);
  });

  it("restores the old limit when enforcement is switched off, on deletion, and not while another policy names the role", async () => {
    role("shop_app");
    w.policy("p", enforce("shop_app"));
    await w.pass();
    expect(w.postgres.roles.get("shop_app")?.connectionLimit).toBe(12);
    w.policy("p", { enforcement: {} });
    let { status } = await w.pass();
    expect(w.postgres.roles.get("shop_app")?.connectionLimit).toBe(-1);
    expect(w.kube.limitRecords.at(-1)).toBeNull();
    expect(condition(status, "RoleConnectionLimit")?.reason).toBe("NotConfigured");
    expect(status.connectionLimit).toBeUndefined();
    expect(w.events.reasons()).toContain("ConnectionLimitRestored");

    w.policy("p", enforce("shop_app"));
    w.kube.deployments_.push({
      metadata: { name: "web", namespace: NS, labels: { app: "web" } },
      spec: { replicas: 1, strategy: { type: "Recreate" } },
    } as unknown as V1Deployment);
    w.policy("q", { ...enforce("shop_app", 0), targets: { selector: { matchLabels: { app: "web" } } } });
    await w.pass("p");
    await w.pass("q");
    ({ status } = await w.pass("p"));
    expect(w.postgres.roles.get("shop_app")?.connectionLimit).toBe(22);
    deleting("q");
    await w.reconciler.reconcile(`${NS}/q`);
    expect(w.postgres.roles.get("shop_app")?.connectionLimit).toBe(22); // p still names it
    w.policies.delete(`${NS}/q`);
    deleting("p");
    await w.reconciler.reconcile(`${NS}/p`);
    expect(w.postgres.roles.get("shop_app")?.connectionLimit).toBe(-1);
    expect(w.kube.finalizerRemoved).toBe(true);
  });

  it("a deletion while PostgreSQL is down waits, and the Warning says how to let it go", async () => {
    role("shop_app");
    w.policy("p", enforce("shop_app"));
    await w.pass();
    w.postgres.reachable = false;
    deleting("p");
    await expect(w.reconciler.reconcile(`${NS}/p`)).rejects.toThrow(
      /restoring the CONNECTION LIMIT of role "shop_app"/,
    );
    expect(w.kube.finalizerRemoved).toBeFalsy();
    const warning = w.events.all.find((e) => e.reason === "ConnectionLimitNotRestored");
    expect(warning?.note).toContain("remove the annotation pooling.dbops.io/connection-limit-before from shop/p");
    w.postgres.reachable = true;
    await w.reconciler.reconcile(`${NS}/p`);
    expect(w.postgres.roles.get("shop_app")?.connectionLimit).toBe(-1);
    expect(w.kube.finalizerRemoved).toBe(true);
  });
});

describe("discovery: a server whose Service belongs to a Postgres operator", () => {
  const applied = (status: PoolPolicyStatus) => condition(status, "MaxConnectionsApplied");
  const spilo = { application: "spilo", "cluster-name": "acid-shop", "spilo-role": "master" };
  const cnpgOwner = [{ apiVersion: "postgresql.cnpg.io/v1", kind: "Cluster", name: "pg", controller: true }];
  const withHost = (host: string, restart?: Record<string, unknown>) => ({
    postgres: { host, maxConnections: 150, ...(restart ? { restart } : {}) },
  });

  it("a Patroni server named by Zalando's Service: CommandLineOverride says which postgresql to name", async () => {
    w.postgres.settingSource = "command line";
    w.kube.services.set("db/acid-shop", { name: "acid-shop", namespace: "db", labels: spilo, ownerReferences: [] });
    w.policy("p", withHost("acid-shop.db", { workload: { kind: "StatefulSet", name: "acid-shop", namespace: "db" } }));
    const { status } = await w.pass();
    expect(applied(status)).toMatchObject({ status: "False", reason: "CommandLineOverride" });
    expect(applied(status)?.message).toContain(
      "Service db/acid-shop belongs to Zalando postgresql db/acid-shop (labels application=spilo, cluster-name=acid-shop): " +
        "set spec.postgres.restart.workload to {apiVersion: acid.zalan.do/v1, kind: postgresql, name: acid-shop, namespace: db}; " +
        "the operator then sets max_connections there and Zalando's postgres-operator restarts the instances " +
        "(Helm chart: --set postgresOperators.zalando.enabled=true)",
    );
    expect(w.kube.restartRequests).toBe(0);
    expect(w.kube.ownerApplies).toEqual([]);
  });

  it("CloudNativePG's read-only Service without a workload: names the Cluster and its -rw Service", async () => {
    w.postgres.allowAlterSystem = false;
    w.kube.services.set("db/pg-ro", { name: "pg-ro", namespace: "db", labels: {}, ownerReferences: cnpgOwner });
    w.policy("p", withHost("pg-ro.db.svc.cluster.local"));
    const { status } = await w.pass();
    expect(applied(status)).toMatchObject({ reason: "AlterSystemDisabled" });
    expect(applied(status)?.message).toContain(
      "Service db/pg-ro belongs to CloudNativePG Cluster db/pg (its owner reference): set spec.postgres.restart.workload to " +
        "{apiVersion: postgresql.cnpg.io/v1, kind: Cluster, name: pg, namespace: db}, and spec.postgres.host to pg-rw.db " +
        "(the primary's Service; db/pg-ro may reach a replica)",
    );
  });

  it("says nothing more where there is no such Service, or on a pass that needs none", async () => {
    w.postgres.settingSource = "command line";
    w.policy("p", withHost("pg.db"));
    let { status } = await w.pass();
    expect(applied(status)?.reason).toBe("CommandLineOverride");
    expect(applied(status)?.message).not.toContain("belongs to");
    expect(w.kube.serviceReads).toEqual(["db/pg"]);

    w = new World();
    w.kube.services.set("db/pg", { name: "pg", namespace: "db", labels: spilo, ownerReferences: [] });
    w.postgres.maxConnections = 150;
    w.policy("p", withHost("pg.db"));
    ({ status } = await w.pass());
    expect(applied(status)?.reason).toBe("Applied");
    expect(w.kube.serviceReads).toEqual([]);
  });

  it("the right resource named already: no suggestion, and its parameter is set", async () => {
    w.postgres.settingSource = "command line";
    w.kube.workload.cluster = { maxConnections: "100", phase: "Running", applyingPhase: "Updating" };
    w.kube.services.set("db/acid-shop", { name: "acid-shop", namespace: "db", labels: spilo, ownerReferences: [] });
    const workload = { apiVersion: "acid.zalan.do/v1", kind: "postgresql", name: "acid-shop", namespace: "db" };
    w.policy("p", withHost("acid-shop.db", { workload }));
    const { status } = await w.pass();
    expect(applied(status)).toMatchObject({ reason: "RestartInProgress" });
    expect(w.kube.ownerApplies).toEqual([150]);
    expect(w.kube.serviceReads).toEqual(["db/acid-shop"]);
  });

  it("another operator resource than the Service's: WorkloadMismatch, nothing set, the right one suggested", async () => {
    w.postgres.allowAlterSystem = false;
    w.kube.services.set("db/pg-rw", { name: "pg-rw", namespace: "db", labels: {}, ownerReferences: cnpgOwner });
    const workload = { apiVersion: "postgresql.cnpg.io/v1", kind: "Cluster", name: "pg-staging", namespace: "db" };
    w.policy("p", withHost("pg-rw.db", { workload }));
    const { status } = await w.pass();
    expect(applied(status)).toMatchObject({ status: "False", reason: "WorkloadMismatch" });
    expect(applied(status)?.message).toContain(
      "spec.postgres.restart.workload names CloudNativePG Cluster db/pg-staging, but PostgreSQL at pg-rw.db is another one's; nothing was changed. " +
        "Service db/pg-rw belongs to CloudNativePG Cluster db/pg",
    );
    expect(w.kube.ownerApplies).toEqual([]);
    expect(w.kube.restartRequests).toBe(0);
    expect(w.events.all.find((e) => e.reason === "WorkloadMismatch")?.type).toBe("Warning");
  });
});

describe("the pooler's share (spec.pooler, spec.pool.via)", () => {
  const pooler = { name: "pgbouncer", image: "pgbouncer:1.18" };

  it("leaves policies that take no part in a pooler without the condition", async () => {
    w.policy("p");
    expect(condition((await w.pass()).status, "PoolerSized")).toBeUndefined();
  });

  const objects =
    "Deployment shop/pgbouncer (1 replicas, maxSurge 1, image pgbouncer:1.18), Service pgbouncer:5432, ConfigMap pgbouncer, Secret pgbouncer-auth";
  const configOf = () => w.kube.pooler.get("ConfigMap shop/pgbouncer") as V1ConfigMap | undefined;
  const deploymentOf = () => w.kube.pooler.get("Deployment shop/pgbouncer") as V1Deployment | undefined;
  const restartChecksumOf = () =>
    deploymentOf()?.spec?.template.metadata?.annotations?.["pooling.dbops.io/pgbouncer-restart-checksum"];

  it("sizes the declared pooler from the server's budget, the same on every policy taking part, and the declaring policy applies it", async () => {
    w.policy("p", { pool: { via: "Pooler" }, pooler });
    w.policy("q");
    w.policy("r", { pool: { via: "Pooler" } });
    const p = await w.pass("p");
    await w.pass("q");
    const r = await w.pass("r");
    // 100 − 5 reserved (3 superuser slots + the operator's 2) − 10 direct (q: pool 10 × 1 pod) = 85,
    // over 1 replica + 1 surge: 42 per pod; p's and r's apps (10 each) are its clients.
    const message =
      `pooler shop/pgbouncer: ${objects}, applied by shop/p; per pod: ` +
      "42 server connections per pod (max_db_connections 42, default_pool_size 42, reserve_pool_size 0) " +
      "× 2 worst-case pods ≤ 85 left after direct clients and reserved slots; max_client_conn 25";
    // Where each policy's apps connect, after the sizes: directly, while no PgBouncer pod is
    // available; so the condition is False (WaitingForPooler), and Ready with it.
    const waiting = "; the apps connect directly until Deployment shop/pgbouncer";
    expect(condition(p.status, "PoolerSized")).toMatchObject({
      status: "False",
      reason: "WaitingForPooler",
      message: `${message}${waiting} exists and has an available pod`,
    });
    expect(condition(r.status, "PoolerSized")).toMatchObject({
      status: "False",
      reason: "WaitingForPooler",
      message: `${message}${waiting} has an available pod`,
    });
    expect(condition(w.policies.get(`${NS}/q`)!.status!, "PoolerSized")).toBeUndefined();
    expect(condition(p.status, "Ready")).toMatchObject({ status: "False", reason: "WaitingForPooler" });
    // Once PgBouncer has an available pod: Sized, and Ready.
    w.kube.poolerAvailable = 1;
    const routed = await w.pass("r");
    expect(condition(routed.status, "PoolerSized")).toMatchObject({ status: "True", reason: "Sized" });
    expect(condition(routed.status, "Ready")).toMatchObject({ status: "True", reason: "Converged" });

    // Only the declaring policy's passes apply (r's pass did not).
    expect(w.kube.poolerApplies).toHaveLength(1);
    expect([...w.kube.pooler.keys()].sort()).toEqual([
      "ConfigMap shop/pgbouncer",
      "Deployment shop/pgbouncer",
      "Secret shop/pgbouncer-auth",
      "Service shop/pgbouncer",
    ]);
    const ini = configOf()!.data!["pgbouncer.ini"]!;
    expect(ini).toContain("max_db_connections = 42\n");
    expect(ini).toContain("max_client_conn = 25\n");
    expect(ini).toContain("app = host=pg.db port=5432 dbname=app\n");
    expect(ini).toContain("auth_file = /etc/pgbouncer/auth/userlist.txt\n");
    expect(ini).not.toContain("s3cret");
    const secret = w.kube.pooler.get("Secret shop/pgbouncer-auth") as V1Secret;
    expect(Buffer.from(secret.data!["userlist.txt"]!, "base64").toString()).toBe('"admin" "s3cret"\n');
    const deployment = deploymentOf()!;
    expect(deployment.spec).toMatchObject({
      replicas: 1,
      strategy: { rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: { spec: { containers: [{ image: "pgbouncer:1.18", ports: [{ containerPort: 5432 }] }] } },
    });
    expect(deployment.spec!.template.spec!.volumes).toEqual([
      { name: "config", configMap: { name: "pgbouncer" } },
      { name: "auth", secret: { secretName: "pgbouncer-auth", defaultMode: 0o444 } },
    ]);
    for (const o of w.kube.pooler.values()) {
      expect(o.metadata!.ownerReferences).toEqual([
        {
          apiVersion: "pooling.dbops.io/v1alpha1",
          kind: "PoolPolicy",
          name: "p",
          uid: "uid-p",
          controller: true,
          blockOwnerDeletion: true,
        },
      ]);
    }
    expect((w.kube.pooler.get("Service shop/pgbouncer") as V1Service).spec!.ports).toEqual([
      { name: "pgbouncer", port: 5432, targetPort: "pgbouncer", protocol: "TCP" },
    ]);
    // The password is in the Secret and nowhere else the operator writes.
    expect(JSON.stringify(w.kube.statusWrites)).not.toContain("s3cret");
    expect(JSON.stringify(w.events.all)).not.toContain("s3cret");
  });

  it("a shrink of the per-pod cap rolls the pods, a growth updates the ConfigMap only, a listener change rolls them", async () => {
    const capOf = () =>
      deploymentOf()?.spec?.template.metadata?.annotations?.["pooling.dbops.io/pgbouncer-max-db-connections"];
    const generation = () => w.kube.poolerGenerations.get("Deployment shop/pgbouncer");
    w.policy("p", { pool: { via: "Pooler" }, pooler });
    w.policy("q");
    await w.pass("p");
    const checksum = restartChecksumOf();
    expect(checksum).toMatch(/^[0-9a-f]{16}$/);
    expect(configOf()!.data!["pgbouncer.ini"]).toContain("max_db_connections = 42\n");
    expect(capOf()).toBe("42");
    expect(generation()).toBe(1);

    // q's direct pool doubles: 100 − 5 − 20 = 75 left, 37 per pod. The running pods hold 42: they must restart.
    w.policy("q", { pool: { maxSize: 20 } });
    await w.pass("p");
    expect(configOf()!.data!["pgbouncer.ini"]).toContain("max_db_connections = 37\n");
    expect(capOf()).toBe("37");
    expect(restartChecksumOf()).toBe(checksum);
    expect(generation()).toBe(2);

    // Back to 42 per pod: pods with 37 are safe, so the template keeps 37 and nothing rolls.
    w.policy("q");
    await w.pass("p");
    expect(configOf()!.data!["pgbouncer.ini"]).toContain("max_db_connections = 42\n");
    expect(capOf()).toBe("37");
    expect(generation()).toBe(2);

    // 40 per pod is still above what the pods run with (37): no roll either.
    w.policy("q", { pool: { maxSize: 14 } });
    await w.pass("p");
    expect(configOf()!.data!["pgbouncer.ini"]).toContain("max_db_connections = 40\n");
    expect(capOf()).toBe("37");
    expect(generation()).toBe(2);

    // A new port is a new listener: PgBouncer must start again, so the template changes.
    w.policy("p", { pool: { via: "Pooler" }, pooler: { ...pooler, port: 6432 } });
    await w.pass("p");
    expect(configOf()!.data!["pgbouncer.ini"]).toContain("listen_port = 6432\n");
    expect(restartChecksumOf()).not.toBe(checksum);
    expect(generation()).toBe(3);
  });

  it("refuses a pooler that does not fit with the numbers, applies nothing, holds Ready back and warns once", async () => {
    w.policy("p", { pool: { via: "Pooler" }, pooler });
    w.policy("q");
    await w.pass("p");
    const applied = structuredClone([...w.kube.pooler.entries()]);
    w.policy("p", { pool: { via: "Pooler" }, pooler: { ...pooler, replicas: 9, minServerConnectionsPerPod: 10 } });
    const { status } = await w.pass("p");
    expect(condition(status, "PoolerSized")).toMatchObject({
      status: "False",
      reason: "PoolerDoesNotFit",
      message:
        "pooler shop/pgbouncer is not rolled out (nothing applied, objects already there left as they are): " +
        "the pooler needs at least 10 server connections per pod; pg.db:5432 has 85 left " +
        "(max_connections 100 − direct clients 10 − reserved 5), 8 per pod for 10 worst-case pooler pods: raise max_connections, " +
        "route more apps through the pooler, run fewer pooler pods, or lower spec.pooler.minServerConnectionsPerPod",
    });
    expect(condition(status, "Ready")).toMatchObject({ status: "False", reason: "PoolerDoesNotFit" });
    await w.pass("p");
    expect(w.events.all.filter((e) => e.reason === "PoolerDoesNotFit" && e.type === "Warning")).toHaveLength(1);
    expect(w.kube.poolerApplies).toHaveLength(1);
    expect([...w.kube.pooler.entries()]).toEqual(applied);
  });

  it("rolls a pooler without surge one pod down first (the API server refuses maxSurge 0 with maxUnavailable 0)", async () => {
    w.policy("p", { pool: { via: "Pooler" }, pooler: { ...pooler, maxSurge: 0 } });
    await w.pass("p");
    expect(deploymentOf()!.spec!.strategy).toEqual({
      type: "RollingUpdate",
      rollingUpdate: { maxSurge: 0, maxUnavailable: 1 },
    });
  });

  it("points via: Pooler apps at the pooler's Service once it has an available pod, and back at their own configuration when it goes", async () => {
    w.policy("p", { pool: { via: "Pooler" }, pooler: { ...pooler, port: 6432 } });
    w.policy("q");
    const first = await w.pass("p");
    // Not yet: the Deployment was only just applied. The apps keep their own configuration, and
    // the pass comes back soon, since nothing else would enqueue it when the pod turns available.
    expect(w.kube.envCalls.at(-1)!.route).toBeUndefined();
    expect(first.requeueAfter).toBe(PROGRESS_POLL_MS);
    w.kube.poolerAvailable = 1;
    const readsBefore = w.kube.poolerReads;
    const second = await w.pass("p");
    // p both routes and applies: one read of the pooler's Deployment serves both.
    expect(w.kube.poolerReads).toBe(readsBefore + 1);
    const route = { host: "pgbouncer.shop.svc", port: 6432 };
    expect(w.kube.envCalls.at(-1)!.route).toEqual(route);
    expect(condition(second.status, "PoolerSized")!.message).toMatch(
      /; this policy's apps connect through it \(DB_POSTGRES_HOST=pgbouncer\.shop\.svc, DB_POSTGRES_PORT=6432\)$/,
    );
    // PgBouncer's pods go (evicted, crash-looping): the apps stay on it rather than roll back and forth.
    w.kube.poolerAvailable = 0;
    const unavailable = await w.pass("p");
    expect(w.kube.envCalls.at(-1)!.route).toEqual(route);
    expect(condition(unavailable.status, "PoolerSized")!.message).toMatch(
      /connect through it \(.*\); Deployment shop\/pgbouncer has no available pod now: the apps stay pointed at it and wait$/,
    );
    // Their new connections fail meanwhile: not Ready, and a Warning says so.
    expect(condition(unavailable.status, "PoolerSized")).toMatchObject({
      status: "False",
      reason: "PoolerUnavailable",
    });
    expect(condition(unavailable.status, "Ready")).toMatchObject({ status: "False", reason: "PoolerUnavailable" });
    expect(w.events.all.some((e) => e.type === "Warning" && e.reason === "PoolerUnavailable")).toBe(true);
    w.kube.poolerAvailable = 1;
    // A Direct policy of the same server gets no route, and costs no read of the pooler.
    const reads = w.kube.poolerReads;
    await w.pass("q");
    expect(w.kube.envCalls.at(-1)!.route).toBeUndefined();
    expect(w.kube.poolerReads).toBe(reads);
    // Going Direct again withdraws the route (targets.ts removes host and port).
    w.policy("p", { pool: { via: "Direct" }, pooler: { ...pooler, port: 6432 } });
    await w.pass("p");
    expect(w.kube.envCalls.at(-1)!.route).toBeUndefined();
  });

  it("sizes the pooler the same on every policy of the server while max_connections is being lowered", async () => {
    // p asks for 60 (in force: 100); r sets no max_connections. Both size against 60, the lower of
    // the two, whichever is reconciled: sized per policy, r said 100 and reported larger pods.
    w.policy("p", { postgres: { maxConnections: 60 }, pool: { via: "Pooler" }, pooler });
    w.policy("r", { pool: { via: "Pooler" } });
    const sizes = (status: PoolPolicyStatus) =>
      condition(status, "PoolerSized")?.message?.match(/per pod: (\d+) server connections per pod/)?.[1];
    const p = await w.pass("p");
    const r = await w.pass("r");
    // 60 − 5 reserved − 0 direct = 55 over 1 replica + 1 surge: 27 per pod.
    expect(sizes(p.status)).toBe("27");
    expect(sizes(r.status)).toBe("27");
  });

  it("withdraws the route when the pooler is no longer declared, though the apps were routed", async () => {
    w.policy("p", { pool: { via: "Pooler" }, pooler });
    w.kube.poolerAvailable = 1;
    await w.pass("p");
    await w.pass("p");
    expect(w.kube.envCalls.at(-1)!.route).toEqual({ host: "pgbouncer.shop.svc", port: 5432 });
    w.policy("p", { pool: { via: "Pooler" } });
    const { status } = await w.pass("p");
    expect(w.kube.envCalls.at(-1)!.route).toBeUndefined();
    expect(condition(status, "PoolerSized")).toMatchObject({ status: "False", reason: "PoolerNotDeclared" });
  });

  it("a pooler refused from the start is never applied", async () => {
    w.policy("p", { pool: { via: "Pooler" }, pooler: { ...pooler, replicas: 9, minServerConnectionsPerPod: 10 } });
    await w.pass("p");
    expect(w.kube.poolerApplies).toEqual([]);
  });

  it("says the chart's pooler RBAC is off when the API server forbids the apply", async () => {
    w.kube.poolerApplyError = Object.assign(new Error("forbidden"), { code: 403 });
    w.policy("p", { pool: { via: "Pooler" }, pooler });
    const { status } = await w.pass("p");
    expect(condition(status, "PoolerSized")).toMatchObject({ status: "False", reason: "PoolerForbidden" });
    expect(condition(status, "PoolerSized")!.message).toContain("pooler.enabled=true");
  });

  it("tells the policies left going through it when the declaring policy goes away", async () => {
    w.policy("p", { pool: { via: "Pooler" }, pooler });
    w.policy("r", { pool: { via: "Pooler" } });
    await w.pass("p");
    w.kube.poolerAvailable = 1;
    expect(condition((await w.pass("r")).status, "PoolerSized")).toMatchObject({ status: "True" });
    w.policies.delete(`${NS}/p`);
    const { status } = await w.pass("r");
    expect(condition(status, "PoolerSized")).toMatchObject({ status: "False", reason: "PoolerNotDeclared" });
    expect(condition(status, "PoolerSized")!.message).toMatch(
      /^the pooler this policy went through is no longer declared by any policy of this server \(deleting the declaring policy deletes the pooler's objects/,
    );
  });

  describe("a pooler the policy no longer declares", () => {
    const FOUR = [
      "ConfigMap shop/pgbouncer",
      "Secret shop/pgbouncer-auth",
      "Deployment shop/pgbouncer",
      "Service shop/pgbouncer",
    ];

    it("is deleted when spec.pooler is removed: its four objects, after a Normal Event naming them, then the record is cleared", async () => {
      w.policy("p", { pool: { via: "Pooler" }, pooler });
      const applied = await w.pass("p");
      expect(applied.status.pooler).toEqual({ name: "pgbouncer" });
      expect(w.kube.pooler.size).toBe(4);

      // The Event must be there before the first delete reaches the API server.
      const eventsAtDelete: string[][] = [];
      w.kube.onPoolerDelete = () => eventsAtDelete.push(w.events.reasons());
      w.policy("p", { pool: { via: "Direct" }, pooler: undefined });
      const { status } = await w.pass("p");
      expect(w.kube.poolerCalls.filter((c) => c.startsWith("delete "))).toEqual(FOUR.map((o) => `delete ${o}`));
      expect(w.kube.pooler.size).toBe(0);
      expect(eventsAtDelete).toHaveLength(4);
      for (const reasons of eventsAtDelete) expect(reasons).toContain("PoolerRemoved");
      const event = w.events.all.find((e) => e.reason === "PoolerRemoved")!;
      expect(event).toMatchObject({ type: "Normal" });
      expect(event.note).toBe(
        "Deleting ConfigMap shop/pgbouncer, Secret shop/pgbouncer-auth, Deployment shop/pgbouncer, Service shop/pgbouncer: " +
          "spec.pooler was removed, and this policy applied pooler shop/pgbouncer",
      );
      expect(status.pooler).toBeUndefined();
      expect(condition(status, "PoolerSized")).toBeUndefined();
      expect(condition(status, "Ready")).toMatchObject({ status: "True" });

      // Done once: the next pass has no record and asks the API server nothing.
      const calls = w.kube.poolerCalls.length;
      await w.pass("p");
      expect(w.kube.poolerCalls.length).toBe(calls);
      expect(w.events.all.filter((e) => e.reason === "PoolerRemoved")).toHaveLength(1);
    });

    it("is deleted when renamed, before the new one is applied", async () => {
      w.policy("p", { pool: { via: "Pooler" }, pooler });
      await w.pass("p");
      w.policy("p", { pool: { via: "Pooler" }, pooler: { ...pooler, name: "bouncer" } });
      const { status } = await w.pass("p");
      expect([...w.kube.pooler.keys()].sort()).toEqual([
        "ConfigMap shop/bouncer",
        "Deployment shop/bouncer",
        "Secret shop/bouncer-auth",
        "Service shop/bouncer",
      ]);
      expect(w.kube.poolerApplies).toHaveLength(2);
      expect(w.events.all.find((e) => e.reason === "PoolerRemoved")?.note).toContain(
        "spec.pooler is now named bouncer, and this policy applied pooler shop/pgbouncer",
      );
      expect(status.pooler).toEqual({ name: "bouncer" });
      // Applied; p's apps wait for the new Deployment's first available pod.
      expect(condition(status, "PoolerSized")).toMatchObject({ status: "False", reason: "WaitingForPooler" });
    });

    it("deletes only the objects this policy owns, and says which it left", async () => {
      w.policy("p", { pool: { via: "Pooler" }, pooler });
      await w.pass("p");
      // A person (or another policy) holds the Service now.
      const service = w.kube.pooler.get("Service shop/pgbouncer")!;
      service.metadata!.ownerReferences = [{ apiVersion: "v1", kind: "PoolPolicy", name: "other", uid: "uid-other" }];
      w.policy("p", { pooler: undefined });
      const { status } = await w.pass("p");
      expect([...w.kube.pooler.keys()]).toEqual(["Service shop/pgbouncer"]);
      expect(w.kube.poolerCalls).not.toContain("delete Service shop/pgbouncer");
      const kept = w.events.all.find((e) => e.reason === "PoolerObjectKept")!;
      expect(kept).toMatchObject({ type: "Warning" });
      expect(kept.note).toBe(
        "Not deleting Service shop/pgbouncer (owned by PoolPolicy other): not owned by this policy",
      );
      expect(status.pooler).toBeUndefined();
    });

    it("counts an object already gone (404) as deleted", async () => {
      w.policy("p", { pool: { via: "Pooler" }, pooler });
      await w.pass("p");
      // The Deployment is deleted by someone else between the operator's read and its delete.
      w.kube.onPoolerDelete = () => w.kube.pooler.delete("Deployment shop/pgbouncer");
      w.policy("p", { pooler: undefined });
      const { status } = await w.pass("p");
      expect(w.kube.pooler.size).toBe(0);
      expect(status.pooler).toBeUndefined();
    });

    it("keeps the record and says how to let it go when the API server forbids the delete", async () => {
      w.policy("p", { pool: { via: "Pooler" }, pooler });
      await w.pass("p");
      w.kube.poolerDeleteError = Object.assign(new Error("forbidden"), { code: 403 });
      w.policy("p", { pool: { via: "Pooler" }, pooler: { ...pooler, name: "bouncer" } });
      const { status } = await w.pass("p");
      expect(condition(status, "PoolerSized")).toMatchObject({ status: "False", reason: "PoolerDeleteForbidden" });
      expect(condition(status, "PoolerSized")!.message).toBe(
        "pooler shop/pgbouncer is no longer declared (spec.pooler is now named bouncer) but stays: the operator may not get or delete " +
          "ConfigMaps, Secrets, Deployments or Services in shop (install the chart with pooler.enabled=true; " +
          "with rbac.secretNames set, add pgbouncer-auth to it); bouncer is not applied until it is gone",
      );
      expect(condition(status, "Ready")).toMatchObject({ status: "False", reason: "PoolerDeleteForbidden" });
      expect(status.pooler).toEqual({ name: "pgbouncer" });
      expect(w.kube.poolerApplies).toHaveLength(1);

      // Once allowed, the next pass deletes the old pooler and applies the new one.
      w.kube.poolerDeleteError = undefined;
      const after = await w.pass("p");
      expect(after.status.pooler).toEqual({ name: "bouncer" });
      expect(w.kube.pooler.has("Deployment shop/pgbouncer")).toBe(false);
      expect(w.kube.pooler.has("Deployment shop/bouncer")).toBe(true);
    });

    it("is left to another policy of the server that still declares it", async () => {
      w.policy("p", { pool: { via: "Pooler" }, pooler });
      w.policy("q", { pool: { via: "Pooler" }, pooler });
      await w.pass("p");
      w.policy("p", { pool: { via: "Pooler" }, pooler: undefined });
      const { status } = await w.pass("p");
      expect(w.kube.poolerCalls).toEqual([]);
      expect(w.kube.pooler.size).toBe(4);
      expect(status.pooler).toBeUndefined();
      // q is the applier now: its pass makes the objects its own.
      await w.pass("q");
      expect(w.kube.pooler.get("Deployment shop/pgbouncer")!.metadata!.ownerReferences![0]!.uid).toBe("uid-q");
    });

    it("costs no API call to a policy that never applied a pooler", async () => {
      w.policy("p");
      w.policy("r", { pool: { via: "Pooler" } });
      await w.pass("p");
      await w.pass("r");
      w.policy("p", { pool: { maxSize: 12 } });
      await w.pass("p");
      expect(w.kube.poolerCalls).toEqual([]);
      expect(w.events.all.filter((e) => e.reason.startsWith("Pooler") && e.reason !== "PoolerNotDeclared")).toEqual([]);
    });
  });

  it("tells a policy that goes via Pooler when no policy of its server declares one, and drops the condition once it goes Direct", async () => {
    w.policy("p", { pool: { via: "Pooler" } });
    const first = await w.pass("p");
    expect(condition(first.status, "PoolerSized")).toMatchObject({ status: "False", reason: "PoolerNotDeclared" });
    w.policy("p", { pool: { via: "Direct" } });
    const second = await w.pass("p");
    expect(condition(second.status, "PoolerSized")).toBeUndefined();
    expect(condition(second.status, "Ready")).toMatchObject({ status: "True" });
  });
});
