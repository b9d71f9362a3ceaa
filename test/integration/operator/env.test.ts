/**
 * Pool env injection over time: Deployments that start or stop matching, a field manager that
 * overwrites our entries, a container filter, and a converged policy that writes nothing.
 */
import { afterAll, beforeAll, expect, inject, it } from "vitest";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig, waitForDeployment } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { metricValue } from "../../harness/faults.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";

let scenario: Scenario;
let operator: OperatorProcess;
const part = { "app.kubernetes.io/part-of": "shop" };

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  const kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  scenario = await Scenario.create(kc, { prefix: "env" });
  operator = new OperatorProcess({
    kubeconfigPath,
    logFile: runLogFile(kubeconfigPath, "operator-env"),
    env: { STATS_REFRESH_SECONDS: "2" },
  });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  await scenario?.cleanup();
});

const injected = { DB_POSTGRES_MIN_CONN: "2", DB_POSTGRES_MAX_CONN: "8" };

it("follows Deployments as they start and stop matching, restores overwritten values, and honours the container filter", async () => {
  await scenario.deployment("api", { labels: part, replicas: 1, containers: ["app", "metrics"] });
  await scenario.applyPolicy(
    "p",
    scenario.policySpec({ pool: { minSize: 2, maxSize: 8 }, targets: { containers: ["app"] } }),
  );
  await waitFor("api to get the env", async () => (await scenario.envOf("api")).DB_POSTGRES_MAX_CONN === "8");
  expect(await scenario.envOf("api", "metrics")).toEqual({ LOG_LEVEL: "info" });

  // A Deployment created later gets the env (the namespace's Deployment watch sees it).
  await scenario.deployment("late", { labels: part, replicas: 1 });
  await waitFor("late to get the env", async () => (await scenario.envOf("late")).DB_POSTGRES_MAX_CONN === "8");

  // A Deployment that stops matching loses exactly what we injected.
  await scenario.apps.patchNamespacedDeployment(
    {
      name: "late",
      namespace: scenario.namespace,
      body: { metadata: { labels: { "app.kubernetes.io/part-of": "elsewhere" } } },
    },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
  await waitFor("late to lose the env", async () => (await scenario.envOf("late")).DB_POSTGRES_MAX_CONN === undefined);
  expect(await scenario.envOf("late")).toEqual({ LOG_LEVEL: "info" });

  // Another field manager overwrites our value: the operator takes it back.
  await scenario.apps.patchNamespacedDeployment(
    {
      name: "api",
      namespace: scenario.namespace,
      fieldManager: "someone-else",
      force: true,
      body: {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: "api" },
        spec: {
          template: { spec: { containers: [{ name: "app", env: [{ name: "DB_POSTGRES_MAX_CONN", value: "99" }] }] } },
        },
      },
    },
    setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
  );
  await waitFor(
    "the operator to restore its value",
    async () => (await scenario.envOf("api")).DB_POSTGRES_MAX_CONN === "8",
  );
  expect(await scenario.envOf("api")).toEqual({ LOG_LEVEL: "info", ...injected });
});

it("writes nothing once converged: neither the status nor the Deployments change across several reconciles", async () => {
  // Converged: the restored Deployment finished rolling out and the status stopped moving.
  await waitForDeployment(scenario.kc, scenario.namespace, "api");
  await scenario.waitForCondition("p", "Ready", { status: "True" });
  let settled = "";
  await waitFor(
    "the status to settle",
    async () => {
      const version = (await scenario.readPolicy("p"))!.metadata.resourceVersion!;
      const same = version === settled;
      settled = version;
      return same;
    },
    { intervalMs: 3_000 },
  );
  // This namespace's only: the policies other test files leave behind are reconciled too until
  // their namespaces are gone.
  const writes = async () =>
    metricValue(await operator.metrics(), "poolpolicy_status_writes_total", { namespace: scenario.namespace });
  const policyVersion = (await scenario.readPolicy("p"))!.metadata.resourceVersion;
  const apiVersion = (await scenario.readDeployment("api")).metadata!.resourceVersion;
  const statusWrites = await writes();
  expect(statusWrites, "the status writes that converged this policy").toBeGreaterThan(0);
  const reconciles = async () =>
    Number(
      (await operator.metrics()).match(
        /^controller_runtime_reconcile_total\{[^}]*result="requeue"[^}]*\} (\d+)/m,
      )?.[1] ?? 0,
    );
  const before = await reconciles();
  await waitFor("three more reconciles", async () => (await reconciles()) >= before + 3, { timeoutMs: 30_000 });
  expect((await scenario.readPolicy("p"))!.metadata.resourceVersion).toBe(policyVersion);
  expect((await scenario.readDeployment("api")).metadata!.resourceVersion).toBe(apiVersion);
  expect(await writes()).toBe(statusWrites);
});
