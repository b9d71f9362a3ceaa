/**
 * max_connections against a real PostgreSQL: the paths that must not restart (command-line
 * override, missing privilege), the Manual approval, and exactly one restart when the operator
 * is SIGKILLed after it requested the restart.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";
import type { KubeConfig } from "@kubernetes/client-node";

let kc: KubeConfig;
let operator: OperatorProcess;
const scenarios: Scenario[] = [];

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  operator = new OperatorProcess({ kubeconfigPath, logFile: runLogFile(kubeconfigPath, "operator-maxconn") });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  for (const s of scenarios) await s.cleanup();
});

async function scenario(options: Parameters<typeof Scenario.create>[1] = {}): Promise<Scenario> {
  const s = await Scenario.create(kc, { prefix: "maxconn", ...options });
  scenarios.push(s);
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  return s;
}

const withRestart = (maxConnections: number, policy = "Automatic") => ({
  postgres: { maxConnections, restart: { workload: { name: "postgres" }, policy } },
});

describe("max_connections", () => {
  it("reports CommandLineOverride and never restarts when the value is set on the postgres command line", async () => {
    const s = await scenario({ commandLine: { max_connections: 60 } });
    const bridge = await s.withPostgresWorkload();
    const started = await s.server.postmasterStartTime();
    await s.applyPolicy("p", s.policySpec(withRestart(80)));
    const p = await s.waitForCondition("p", "MaxConnectionsApplied", {
      status: "False",
      reason: "CommandLineOverride",
    });
    expect(p.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
      "ALTER SYSTEM cannot change it",
    );
    expect(p.status?.postgres?.settingSource).toBe("command line");
    await s.waitForCondition("p", "Ready", { status: "False", reason: "CommandLineOverride" });
    // The raise is refused, but the server as it is carries the pools ((1 pod + 1 surge) × 25 + 5
    // reserved = 55 ≤ 60): they are injected, not held for a raise that cannot come.
    const injected = await s.waitForCondition("p", "PoolEnvInjected", { status: "True" });
    expect(injected.status?.conditions?.find((c) => c.type === "BudgetWithinLimits")?.status).toBe("True");
    expect((await s.envOf("api")).DB_POSTGRES_MAX_CONN).toBe("25");
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(0);
    expect((await s.server.postmasterStartTime()).getTime()).toBe(started.getTime());
    const altered = await s.server.query(
      "SELECT count(*)::int AS n FROM pg_file_settings WHERE name = 'max_connections' AND sourcefile LIKE '%auto.conf'",
    );
    expect(altered[0]!.n).toBe(0);
  });

  it("reports PermissionDenied with the GRANT that fixes it when the role may not ALTER SYSTEM", async () => {
    const s = await scenario();
    await s.withPostgresWorkload();
    await s.server.query("CREATE ROLE ops LOGIN PASSWORD 'ops-secret-pw' IN ROLE pg_read_all_stats, pg_signal_backend");
    await s.core.createNamespacedSecret({
      namespace: s.namespace,
      body: { metadata: { name: "ops" }, stringData: { username: "ops", password: "ops-secret-pw" } },
    });
    await s.applyPolicy(
      "p",
      s.policySpec({
        ...withRestart(90),
        postgres: { ...withRestart(90).postgres, credentialsSecret: { name: "ops" } },
      }),
    );
    const p = await s.waitForCondition("p", "MaxConnectionsApplied", { status: "False", reason: "PermissionDenied" });
    expect(p.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
      "GRANT ALTER SYSTEM ON PARAMETER max_connections",
    );
    expect(await s.server.setting("max_connections")).toBe("100");
    expect(operator.logs()).not.toContain("ops-secret-pw");
  });

  it("waits for the approval annotation under policy Manual, then restarts once", async () => {
    const s = await scenario();
    const bridge = await s.withPostgresWorkload();
    await s.applyPolicy("p", s.policySpec(withRestart(110, "Manual")));
    const waiting = await s.waitForCondition("p", "MaxConnectionsApplied", { reason: "AwaitingApproval" });
    expect(waiting.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
      "kubectl annotate poolpolicy p --overwrite pooling.dbops.io/approve-restart=110",
    );
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(0);
    // Nothing is written before the approval: an unplanned restart (a node drain, a crash)
    // must not apply the value behind the approver's back.
    const [setting] = await s.server.query(
      "SELECT pending_restart, (SELECT count(*)::int FROM pg_file_settings WHERE name = 'max_connections' AND sourcefile LIKE '%auto.conf') AS altered FROM pg_settings WHERE name = 'max_connections'",
    );
    expect(setting).toEqual({ pending_restart: false, altered: 0 });

    await s.patchPolicy("p", { metadata: { annotations: { "pooling.dbops.io/approve-restart": "110" } } });
    await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(await s.server.setting("max_connections")).toBe("110");
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(1);
  });

  it("restarts exactly once when the operator is SIGKILLed after requesting the restart", async () => {
    const s = await scenario();
    const bridge = await s.withPostgresWorkload();
    await bridge.stop(); // the "kubelet" is slow: the restart cannot complete yet
    await s.applyPolicy("p", s.policySpec(withRestart(130)));
    await waitFor("the restart request", async () => (await s.events()).some((e) => e.reason === "RestartRequested"));
    await operator.kill();

    await operator.start();
    bridge.start();
    await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(await s.server.setting("max_connections")).toBe("130");
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(1);
    const sts = await s.apps.readNamespacedStatefulSet({ name: "postgres", namespace: s.namespace });
    expect(sts.metadata?.generation).toBe(2); // one template change: one rollout
    expect((await s.events()).filter((e) => e.reason === "RestartRequested")).toHaveLength(1);
  });
});
