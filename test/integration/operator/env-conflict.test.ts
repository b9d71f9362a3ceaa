/**
 * A GitOps tool that sets the same env var as the policy (issue 13, point 2): a second client
 * re-applies DB_POSTGRES_MAX_CONN=50 with a field manager of its own, as a self-heal would, while
 * the policy says 8. The operator takes it back a bounded number of times, then stops, reports
 * who and what, and stays stopped across an operator restart; the Deployment's generation shows
 * how many rollouts the fight cost.
 */
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { afterAll, beforeAll, expect, inject, it } from "vitest";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { MAX_TAKES } from "../../../src/controller/env-conflicts.js";
import { Scenario } from "./scenario.js";

let scenario: Scenario;
let operator: OperatorProcess;
const GITOPS = "gitops-self-heal";

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  const kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  scenario = await Scenario.create(kc, { prefix: "gitops" });
  operator = new OperatorProcess({
    kubeconfigPath,
    logFile: runLogFile(kubeconfigPath, "operator-env-conflict"),
    env: { STATS_REFRESH_SECONDS: "1" },
  });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  await scenario?.cleanup();
});

/** What the GitOps tool's self-heal does: apply its manifest's env entry with its own field manager. */
async function gitopsApply(value: string): Promise<void> {
  await scenario.apps.patchNamespacedDeployment(
    {
      name: "api",
      namespace: scenario.namespace,
      fieldManager: GITOPS,
      force: true,
      body: {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: "api" },
        spec: {
          template: { spec: { containers: [{ name: "app", env: [{ name: "DB_POSTGRES_MAX_CONN", value }] }] } },
        },
      },
    },
    setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
  );
}

const generation = async () => (await scenario.readDeployment("api")).metadata!.generation!;
const maxConn = async () => (await scenario.envOf("api")).DB_POSTGRES_MAX_CONN;
const conflictOf = async () => (await scenario.status("p")).targets?.find((t) => t.name === "api")?.conflict;

/** Waits until the operator has run `n` more passes: long enough that a pass that would write has written. */
async function passes(n: number): Promise<void> {
  const count = async () =>
    Number(
      (await operator.metrics()).match(
        /^controller_runtime_reconcile_total\{[^}]*result="requeue"[^}]*\} (\d+)/m,
      )?.[1] ?? 0,
    );
  const before = await count();
  await waitFor(`${n} more reconciles`, async () => (await count()) >= before + n, { timeoutMs: 60_000 });
}

it(`takes the pool env back from another field manager ${MAX_TAKES} times, then stops, reports it and stays stopped`, async () => {
  await scenario.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  await scenario.applyPolicy("p", scenario.policySpec({ pool: { minSize: 2, maxSize: 8 } }));
  await waitFor("the pool env in api", async () => (await maxConn()) === "8");
  const before = await generation();

  // The fight: the tool sets 50, the operator sets 8 again and counts the take in its status.
  // Each overwrite waits for the count of the previous take, as a self-heal every 15 s would.
  for (let take = 1; take <= MAX_TAKES; take++) {
    await gitopsApply("50");
    await waitFor(`take ${take}: the operator sets 8 again`, async () => (await maxConn()) === "8");
    await waitFor(`take ${take} counted in the status`, async () => (await conflictOf())?.takes === take);
  }
  expect(await conflictOf()).toMatchObject({
    manager: GITOPS,
    theirs: "DB_POSTGRES_MAX_CONN=50",
    ours: "DB_POSTGRES_MAX_CONN=8",
  });

  // One overwrite more: the operator leaves it.
  await gitopsApply("50");
  const stopped = await scenario.waitForCondition("p", "PoolEnvInjected", {
    status: "False",
    reason: "ConflictingManager",
  });
  const message = stopped.status!.conditions!.find((c) => c.type === "PoolEnvInjected")!.message;
  for (const part of ["Deployment api", `"${GITOPS}"`, "DB_POSTGRES_MAX_CONN=50", "DB_POSTGRES_MAX_CONN=8"])
    expect(message).toContain(part);
  expect(stopped.status!.conditions!.find((c) => c.type === "Ready")).toMatchObject({ status: "False" });
  expect(await conflictOf()).toMatchObject({ takes: MAX_TAKES, yieldedUntil: expect.any(String) });

  // Each overwrite and each take changed the pod template once: the fight cost exactly
  // MAX_TAKES + 1 + MAX_TAKES rollouts, and no more from here on.
  const afterFight = await generation();
  expect(afterFight - before).toBe(2 * MAX_TAKES + 1);

  // The Warning Events: the repeated takes, then the stop, naming manager, Deployment and both values.
  const warnings = (await scenario.events()).filter((e) => e.type === "Warning" && e.reason === "EnvConflict");
  expect(warnings.map((e) => e.note.split(" ")[0])).toEqual([
    ...Array.from({ length: MAX_TAKES - 1 }, () => "Took"),
    "Stopped",
  ]);
  for (const part of ["Deployment api", `"${GITOPS}"`, "DB_POSTGRES_MAX_CONN=50", "DB_POSTGRES_MAX_CONN=8"])
    expect(warnings.at(-1)!.note).toContain(part);

  // Stopped: the tool re-applies its manifest, the operator passes over it again and again.
  await gitopsApply("50");
  await passes(5);
  expect(await maxConn()).toBe("50");
  expect(await generation()).toBe(afterFight);

  // A restart reads the count back from the status: no new fight.
  await operator.stop();
  await operator.start();
  await passes(5);
  expect(await maxConn()).toBe("50");
  expect(await generation()).toBe(afterFight);
  await scenario.waitForCondition("p", "PoolEnvInjected", { status: "False", reason: "ConflictingManager" });
  const stops = (await scenario.events()).filter((e) => e.reason === "EnvConflict" && e.note.startsWith("Stopped"));
  expect(stops).toHaveLength(1);

  // Resolved on the other side (the variable dropped from the manifest): the operator's value
  // goes in once, and the conflict is over.
  await scenario.apps.patchNamespacedDeployment(
    {
      name: "api",
      namespace: scenario.namespace,
      fieldManager: GITOPS,
      force: true,
      body: { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "api" } },
    },
    setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
  );
  await scenario.waitForCondition("p", "PoolEnvInjected", { status: "True", reason: "Injected" });
  expect(await maxConn()).toBe("8");
  expect(await conflictOf()).toBeUndefined();
});
