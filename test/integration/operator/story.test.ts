/**
 * The whole story in one test, against the real control plane, PostgreSQL and the operator
 * running as its own process: apply a policy → env injected and the Deployments rolled →
 * max_connections changed after exactly one PostgreSQL restart → an idle-in-transaction
 * session terminated while an active one and a plain idle one survive → every condition True
 * → delete the policy → the injected env is gone (max_connections stays).
 */
import { afterAll, beforeAll, expect, inject, it } from "vitest";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig, waitForDeployment } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";
import type { PostgresPodBridge } from "../../harness/postgres-bridge.js";

let scenario: Scenario;
let operator: OperatorProcess;
let bridge: PostgresPodBridge;

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  const kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  scenario = await Scenario.create(kc, { prefix: "story" });
  // With a memory limit, as users run PostgreSQL: the memory ceiling is known, so every
  // condition, MemoryWithinLimits included, can say True (2Gi carries ~220 connections here).
  bridge = await scenario.withPostgresWorkload({ memoryLimit: "2Gi" });
  await scenario.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 2 });
  await scenario.deployment("worker", {
    labels: { "app.kubernetes.io/part-of": "shop" },
    replicas: 1,
    containers: ["worker", "sidecar"],
  });
  await scenario.deployment("unrelated", { labels: { "app.kubernetes.io/part-of": "other" }, replicas: 1 });
  operator = new OperatorProcess({ kubeconfigPath, logFile: runLogFile(kubeconfigPath, "operator-story") });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  await scenario?.cleanup();
});

it("converges, reaps, reports and cleans up", async () => {
  const before = await scenario.server.postmasterStartTime();
  expect(await scenario.server.setting("max_connections")).toBe("100");

  await scenario.applyPolicy(
    "shop",
    scenario.policySpec({
      postgres: { maxConnections: 120, restart: { workload: { kind: "StatefulSet", name: "postgres" } } },
      pool: { minSize: 3, maxSize: 12 },
      reaper: { interval: "5s", idleInTransactionTimeout: "2s", excludeApplicationNames: ["pg_dump"] },
    }),
  );

  // max_connections: applied with exactly one restart, verified.
  await scenario.waitForCondition("shop", "MaxConnectionsApplied", { status: "True", reason: "Applied" }, 180_000);
  expect(await scenario.server.setting("max_connections")).toBe("120");
  expect((await scenario.server.postmasterStartTime()).getTime()).toBeGreaterThan(before.getTime());
  expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(1);

  // Env: both matching Deployments carry it (every container of "worker"), the other does not.
  await scenario.waitForCondition("shop", "PoolEnvInjected", { status: "True" });
  expect(await scenario.envOf("api")).toEqual({
    LOG_LEVEL: "info",
    DB_POSTGRES_MIN_CONN: "3",
    DB_POSTGRES_MAX_CONN: "12",
  });
  expect(await scenario.envOf("worker", "worker")).toMatchObject({ DB_POSTGRES_MAX_CONN: "12" });
  expect(await scenario.envOf("worker", "sidecar")).toMatchObject({ DB_POSTGRES_MAX_CONN: "12" });
  expect(await scenario.envOf("unrelated")).toEqual({ LOG_LEVEL: "info" });
  const api = await waitForDeployment(scenario.kc, scenario.namespace, "api");
  expect(api.metadata?.generation).toBe(2); // the env change rolled it once
  const managers = api.metadata?.managedFields?.map((f) => f.manager);
  expect(managers).toContain("poolpolicy-operator/shop");

  // Reaper: only the session idle in a transaction, and not the excluded application.
  const idleInTx = await scenario.session("checkout");
  await idleInTx.query("BEGIN");
  await idleInTx.query("SELECT 1");
  const excluded = await scenario.session("pg_dump");
  await excluded.query("BEGIN");
  await excluded.query("SELECT 1");
  const plainIdle = await scenario.session("catalog");
  await plainIdle.query("SELECT 1");
  const active = await scenario.session("reports");
  const activeQuery = active.query("SELECT pg_sleep(20)");
  const pidOf = async (c: typeof idleInTx) => (await c.query("SELECT pg_backend_pid() AS pid")).rows[0].pid as number;
  const pids = {
    idleInTx: (await scenario.server.query("SELECT pid FROM pg_stat_activity WHERE application_name = 'checkout'"))[0]!
      .pid as number,
  };
  const alive = async (app: string) =>
    (await scenario.server.query("SELECT 1 FROM pg_stat_activity WHERE application_name = $1", [app])).length === 1;

  await waitFor("the idle-in-transaction session to be terminated", async () => !(await alive("checkout")), {
    timeoutMs: 60_000,
  });
  expect(await alive("pg_dump")).toBe(true);
  expect(await alive("catalog")).toBe(true);
  expect(await alive("reports")).toBe(true);
  expect(await pidOf(plainIdle)).toBeGreaterThan(0);
  await expect(idleInTx.query("SELECT 1")).rejects.toThrow();
  await activeQuery; // the active session finished its work undisturbed

  await waitFor(
    "status to count the reaped session",
    async () => ((await scenario.status("shop")).reaper?.totalTerminated ?? 0) >= 1,
  );
  const events = await scenario.events();
  expect(events.find((e) => e.reason === "SessionsReaped")?.note).toContain(`pid ${pids.idleInTx}`);
  expect(events.map((e) => e.reason)).toEqual(
    expect.arrayContaining(["MaxConnectionsAltered", "RestartRequested", "EnvInjected"]),
  );

  // Every condition True, and the printer-column fields filled in.
  const ready = await scenario.waitForCondition("shop", "Ready", { status: "True" });
  for (const c of ready.status!.conditions!) expect(c, c.type).toMatchObject({ status: "True", observedGeneration: 1 });
  expect(ready.status!.postgres).toMatchObject({ maxConnections: 120, pendingRestart: false });
  expect(ready.status!.postgres!.usage).toMatch(/^\d+\/120 \(\d+%\)$/);
  expect(ready.status!.targetsSummary).toBe("2/2");
  expect(ready.status!.observedGeneration).toBe(1);

  // Still exactly one restart after several more reconciles.
  expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(1);

  // Delete: env gone, the other env kept, max_connections left as is.
  await scenario.deletePolicy("shop");
  await waitFor("the policy to be gone", async () => (await scenario.readPolicy("shop")) === undefined);
  expect(await scenario.envOf("api")).toEqual({ LOG_LEVEL: "info" });
  expect(await scenario.envOf("worker", "sidecar")).toEqual({ LOG_LEVEL: "info" });
  expect(await scenario.server.setting("max_connections")).toBe("120");

  // No password anywhere in what the operator wrote.
  expect(operator.logs()).not.toContain(scenario.server.password);
  expect(JSON.stringify(await scenario.events())).not.toContain(scenario.server.password);
});
