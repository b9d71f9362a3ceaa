/**
 * One server, several policies, and the restart guard rail, against the real parts (control
 * plane with StatefulSet controller and kwok, a real PostgreSQL behind the pod bridge):
 *   - the pair of policies that once restarted PostgreSQL 67 times in 3 minutes restarts it
 *     once, then never again for five minutes, and `poolpolicy diagnose` reports the budget the
 *     status shows;
 *   - past the restart limit the operator stops restarting, says so (condition, Warning Event,
 *     metric, hold recorded on the workload), changes nothing, and goes on once a person
 *     removes the hold;
 *   - rapid edits during a restart: the final value, Ready only once the StatefulSet has rolled
 *     out, and no restart after Ready.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { PatchStrategy, setHeaderOptions, type KubeConfig } from "@kubernetes/client-node";
import { runCli } from "../../../src/cli/main.js";
import type { DiagnoseReport } from "../../../src/cli/report.js";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";

let kc: KubeConfig;
let kubeconfigPath: string;
let operator: OperatorProcess;
const scenarios: Scenario[] = [];
const MAX_RESTARTS_PER_HOUR = 2;

beforeAll(async () => {
  kubeconfigPath = inject("kubeconfigPath");
  kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  operator = new OperatorProcess({
    kubeconfigPath,
    logFile: runLogFile(kubeconfigPath, "operator-server-model"),
    // A short stats refresh: every policy re-decides often, so a flap would show within the test.
    env: { STATS_REFRESH_SECONDS: "5", MAX_RESTARTS_PER_HOUR: String(MAX_RESTARTS_PER_HOUR) },
  });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  for (const s of scenarios) await s.cleanup();
});

async function scenario(): Promise<Scenario> {
  const s = await Scenario.create(kc, { prefix: "server" });
  scenarios.push(s);
  return s;
}

const restartTo = (maxConnections: number | "auto") => ({
  postgres: { maxConnections, restart: { workload: { name: "postgres" } } },
});

const condition = (p: { status?: { conditions?: { type: string; reason: string; message: string }[] } }, t: string) =>
  p.status?.conditions?.find((c) => c.type === t);

describe("two policies on one server", () => {
  it("restart it once, then never for five minutes, and diagnose reports the status's budget", async () => {
    const s = await scenario();
    const bridge = await s.withPostgresWorkload();
    const part = { "app.kubernetes.io/part-of": "shop" };
    await s.deployment("api", { labels: { ...part, app: "api" }, replicas: 3 });
    await s.deployment("web", { labels: { ...part, app: "web" }, replicas: 3 });
    // The pair from issue 12: each alone would size max_connections differently.
    await s.applyPolicy(
      "a",
      s.policySpec({
        ...restartTo("auto"),
        budget: { reserve: 5 },
        pool: { maxSize: 20 },
        targets: { selector: { matchLabels: { app: "api" } } },
      }),
    );
    await s.applyPolicy(
      "b",
      s.policySpec({
        ...restartTo("auto"),
        budget: { reserve: 80, headroomPercent: 50 },
        pool: { maxSize: 20 },
        targets: { selector: { matchLabels: { app: "web" } } },
      }),
    );
    // Demand: 2 Deployments × (3 + 1 surge) × 20 + (3 superuser + 2 operator + 80 reserve) = 245;
    // the server's headroom is the larger one, 50 %: 367.5 → 370.
    for (const name of ["a", "b"]) await s.waitForCondition(name, "Ready", { status: "True" }, 180_000);
    expect(await s.server.setting("max_connections")).toBe("370");
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(1);
    const started = await s.server.postmasterStartTime();

    // Five minutes of steady state, with every policy re-deciding every 5 s: no restart, and
    // every policy keeps saying Ready with the one value.
    const until = Date.now() + 5 * 60_000;
    while (Date.now() < until) {
      await new Promise((r) => setTimeout(r, 15_000));
      expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(1);
      expect((await s.server.postmasterStartTime()).getTime()).toBe(started.getTime());
      for (const name of ["a", "b"]) {
        const p = (await s.readPolicy(name))!;
        expect(condition(p, "Ready")?.reason, name).toBe("Converged");
        expect(condition(p, "MaxConnectionsApplied")?.message).toContain("max_connections is 370");
      }
    }

    const status = (await s.readPolicy("a"))!.status!.budget!;
    expect(status).toMatchObject({ demand: 245, capacity: 370, reserve: 85, policies: 2 });
    // A policy's status lists its own targets only; the server's totals once.
    expect(status.targets?.map((t) => t.deployment)).toEqual([`${s.namespace}/api`]);
    const result = await runCli(["diagnose", `${s.namespace}/b`, "--kubeconfig", kubeconfigPath, "--json"]);
    const report = JSON.parse(result.stdout) as DiagnoseReport;
    expect(report.budget).toMatchObject({
      demand: status.demand,
      capacity: status.capacity,
      reserve: { total: status.reserve },
      headroomPercent: 50,
      policies: [`${s.namespace}/a`, `${s.namespace}/b`],
    });
  }, 480_000);
});

describe("the restart limit", () => {
  it("past MAX_RESTARTS_PER_HOUR holds restarts and says so until a person releases them", async () => {
    const s = await scenario();
    const bridge = await s.withPostgresWorkload();
    await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
    await s.applyPolicy("p", s.policySpec(restartTo(110)));
    await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    await s.patchPolicy("p", { spec: { postgres: { maxConnections: 120 } } });
    await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(MAX_RESTARTS_PER_HOUR);
    const started = await s.server.postmasterStartTime();

    // The third change within the hour: held.
    await s.patchPolicy("p", { spec: { postgres: { maxConnections: 130 } } });
    const held = await s.waitForCondition("p", "MaxConnectionsApplied", {
      status: "False",
      reason: "RestartLimitReached",
    });
    expect(condition(held, "MaxConnectionsApplied")?.message).toContain(
      `kubectl annotate statefulset postgres -n ${s.namespace} pooling.dbops.io/restarts-held- pooling.dbops.io/restart-history-`,
    );
    expect(condition(held, "Ready")).toMatchObject({ status: "False", reason: "RestartLimitReached" });
    await waitFor("the Warning Event", async () =>
      (await s.events()).some((e) => e.reason === "RestartLimitReached" && e.type === "Warning"),
    );
    const sts = await s.apps.readNamespacedStatefulSet({ name: "postgres", namespace: s.namespace });
    expect(sts.metadata?.annotations?.["pooling.dbops.io/restarts-held"]).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(sts.metadata?.annotations?.["pooling.dbops.io/restart-history"]?.split(",")).toHaveLength(2);
    expect(await operator.metrics()).toMatch(
      new RegExp(`poolpolicy_postgres_restarts_held\\{workload="StatefulSet ${s.namespace}/postgres"\\} 1`),
    );
    // Nothing changed on the server: no restart, and no ALTER SYSTEM waiting for one.
    await new Promise((r) => setTimeout(r, 3_000));
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(MAX_RESTARTS_PER_HOUR);
    expect((await s.server.postmasterStartTime()).getTime()).toBe(started.getTime());
    const [pending] = await s.server.query("SELECT pending_restart FROM pg_settings WHERE name = 'max_connections'");
    expect(pending!.pending_restart).toBe(false);

    // A person releases the hold, as the message says.
    await s.apps.patchNamespacedStatefulSet(
      {
        name: "postgres",
        namespace: s.namespace,
        body: {
          metadata: {
            annotations: { "pooling.dbops.io/restarts-held": null, "pooling.dbops.io/restart-history": null },
          },
        },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(await s.server.setting("max_connections")).toBe("130");
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(MAX_RESTARTS_PER_HOUR + 1);
  }, 300_000);
});

describe("rapid edits", () => {
  it("end at the last value, Ready only after the rollout, and no restart after Ready", async () => {
    const s = await scenario();
    const bridge = await s.withPostgresWorkload();
    await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
    await s.applyPolicy("p", s.policySpec(restartTo(100)));
    await s.waitForCondition("p", "Ready", { status: "True" });
    for (const value of [150, 200]) {
      await s.patchPolicy("p", { spec: { postgres: { maxConnections: value } } });
      await new Promise((r) => setTimeout(r, 300));
    }
    await s.waitForCondition("p", "Ready", { status: "True" }, 180_000);
    const sts = await s.apps.readNamespacedStatefulSet({ name: "postgres", namespace: s.namespace });
    expect(sts.status?.currentRevision).toBe(sts.status?.updateRevision);
    expect(sts.status?.readyReplicas).toBe(1);
    expect(await s.server.setting("max_connections")).toBe("200");
    const rollouts = bridge.rollouts;
    // Two edits: at most one restart each; the second is often not needed at all.
    expect(rollouts, JSON.stringify(bridge.events)).toBeGreaterThanOrEqual(1);
    expect(rollouts, JSON.stringify(bridge.events)).toBeLessThanOrEqual(2);
    const started = await s.server.postmasterStartTime();
    await new Promise((r) => setTimeout(r, 5_000));
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(rollouts);
    expect((await s.server.postmasterStartTime()).getTime()).toBe(started.getTime());
  }, 300_000);
});
