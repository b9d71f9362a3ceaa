/**
 * A primary and a streaming replica behind one StatefulSet (two local PostgreSQL servers with
 * real replication, bound to pods 0 and 1 by the pod bridge): raising max_connections restarts
 * the replica first, lowering restarts the primary first and the replica once it has replayed;
 * the replica keeps replaying throughout (the hot-standby rule is never broken).
 */
import { afterAll, beforeAll, expect, inject, it } from "vitest";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig, waitForStatefulSet } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { PostgresServer } from "../../harness/postgres.js";
import { PostgresPodBridge } from "../../harness/postgres-bridge.js";
import { postgresService, postgresStatefulSet } from "../../harness/manifests.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";

let scenario: Scenario;
let replica: PostgresServer;
let bridge: PostgresPodBridge;
let operator: OperatorProcess;

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  const kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  scenario = await Scenario.create(kc, { prefix: "topo" });
  replica = await PostgresServer.createReplica(scenario.server, { host: "127.0.0.2" });
  await scenario.core.createNamespacedService({
    namespace: scenario.namespace,
    body: postgresService(scenario.namespace),
  });
  await scenario.apps.createNamespacedStatefulSet({
    namespace: scenario.namespace,
    body: postgresStatefulSet(scenario.namespace, "postgres", 2),
  });
  bridge = new PostgresPodBridge(kc, scenario.namespace, "postgres", [scenario.server, replica]);
  bridge.start();
  await waitForStatefulSet(kc, scenario.namespace, "postgres");
  await scenario.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  operator = new OperatorProcess({ kubeconfigPath, logFile: runLogFile(kubeconfigPath, "operator-topo") });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  await bridge?.stop();
  await replica?.destroy();
  await scenario?.cleanup();
});

/** The replica replays: a row written on the primary shows up on it, and replay is not paused. */
async function replicaKeepsReplaying(marker: number): Promise<void> {
  await scenario.server.query("CREATE TABLE IF NOT EXISTS beat (n int)", [], "appdb");
  await scenario.server.query("INSERT INTO beat VALUES ($1)", [marker], "appdb");
  await waitFor(
    `the replica to replay row ${marker}`,
    async () => (await replica.query("SELECT 1 FROM beat WHERE n = $1", [marker], "appdb")).length === 1,
  );
  expect((await replica.query("SELECT pg_get_wal_replay_pause_state() AS s"))[0]!.s).toBe("not paused");
}

const startedOrder = () => bridge.events.filter((e) => e.action === "started").map((e) => e.pod);

it("raises on the replica first and lowers on the primary first, one pod at a time", async () => {
  await replicaKeepsReplaying(1);
  await scenario.applyPolicy(
    "p",
    scenario.policySpec({
      postgres: { maxConnections: 150, restart: { workload: { name: "postgres" }, delayBetweenPods: "1s" } },
    }),
  );
  const raised = await scenario.waitForCondition(
    "p",
    "MaxConnectionsApplied",
    { status: "True", reason: "Applied" },
    180_000,
  );
  // The one planner says where the value comes from, for a group as for one instance.
  expect(raised.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toBe(
    `max_connections is 150 on all 2 pods (spec of ${scenario.namespace}/p)`,
  );
  expect(startedOrder()).toEqual(["postgres-1", "postgres-0"]);
  expect(await scenario.server.setting("max_connections")).toBe("150");
  expect(await replica.setting("max_connections")).toBe("150");
  await replicaKeepsReplaying(2);

  await scenario.patchPolicy("p", { spec: { postgres: { maxConnections: 120 } } });
  await scenario.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" }, 180_000);
  expect(startedOrder()).toEqual(["postgres-1", "postgres-0", "postgres-0", "postgres-1"]);
  expect(await replica.setting("max_connections")).toBe("120");
  await replicaKeepsReplaying(3);
  const notes = (await scenario.events()).filter((e) => e.reason === "RestartingPod").map((e) => e.note);
  expect(notes[0]).toContain("restarting replica postgres-1 first");
  expect(notes.some((n) => n.includes("restarting the primary postgres-0 first"))).toBe(true);
});
