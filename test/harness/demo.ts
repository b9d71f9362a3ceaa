/**
 * `make demo`. Where Docker is usable (and as root), the user's story on real pods:
 * test/e2e/demo.ts, the steps of `make e2e`. Elsewhere, or with DEMO=kwok, the story below: the
 * operator on a local control plane whose pods kwok simulates, with a local PostgreSQL and Redis,
 * and a PoolPolicy converging, printed as it happens. DEMO=real insists on real pods.
 *
 * Everything runs on loopback in temp dirs and is removed on Ctrl-C. Set DEMO_EXIT=1 to stop
 * by itself once the story is told (used by the demo's own test).
 */
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AppsV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { load } from "js-yaml";
import pg from "pg";
import { ControlPlane } from "./controlplane.js";
import { installPoolPolicyCrd } from "./crd.js";
import { appDeployment, postgresService, postgresStatefulSet } from "./manifests.js";
import { OperatorProcess } from "./operator.js";
import { PostgresServer } from "./postgres.js";
import { PostgresPodBridge } from "./postgres-bridge.js";
import { RedisServer } from "./redis.js";
import { waitFor } from "./processes.js";
import { repoRoot, toolPath } from "./tools.js";
import { waitForStatefulSet } from "./kube.js";
import { policyReady, say, show, watchPolicyUntil } from "./demo-output.js";
import { realPodsUnavailable } from "../e2e/story.js";

const NAMESPACE = "demo";

async function kwokDemo(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "poolpolicy-demo-"));
  const cleanups: (() => Promise<void>)[] = [];
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      say("cleaning up: stopping the operator, PostgreSQL, Redis and the control plane");
      for (const c of cleanups.reverse()) await c().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    })());
  process.on("SIGINT", () => void cleanup().then(() => process.exit(0)));
  process.on("SIGTERM", () => void cleanup().then(() => process.exit(0)));

  try {
    say("starting a Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)");
    const plane = new ControlPlane();
    cleanups.push(() => plane.stop());
    await plane.start();
    const kc = plane.kubeConfig();
    const kubectl = (...args: string[]) =>
      execFileSync(toolPath("kubectl"), ["--kubeconfig", plane.kubeconfigPath, ...args], { encoding: "utf8" });

    say("starting PostgreSQL and Redis (local processes on free loopback ports)");
    const postgres = await PostgresServer.create();
    cleanups.push(() => postgres.destroy());
    await postgres.query("CREATE DATABASE governance");
    const redis = await RedisServer.create({ password: `demo-${Date.now().toString(36)}` });
    cleanups.push(() => redis.destroy());

    say("installing the PoolPolicy CRD and the demo namespace: a postgres StatefulSet and three apps");
    await installPoolPolicyCrd(kc);
    const bridge = await createDemoWorkloads(kc, postgres, redis);
    cleanups.push(() => bridge.stop());

    say("starting the operator");
    const operator = new OperatorProcess({
      kubeconfigPath: plane.kubeconfigPath,
      logFile: join(dir, "operator.log"),
      env: { LOG_LEVEL: "info" },
    });
    cleanups.push(() => operator.stop());
    await operator.start();

    const before = await postgres.setting("max_connections");
    say(`max_connections before: ${before}`);
    const policy = demoPolicy(postgres.port);
    say(
      "applying examples/poolpolicy.yaml (the demo points it at the local PostgreSQL, 127.0.0.1:" +
        postgres.port +
        ", and reaps after 10s instead of 5m so you can watch it)",
    );
    await kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
      group: "pooling.dbops.io",
      version: "v1alpha1",
      plural: "poolpolicies",
      namespace: NAMESPACE,
      body: policy,
    });

    await watchPolicyUntil(kc, NAMESPACE, kubectl, () => policyReady(kc, NAMESPACE, "governance"));
    say(
      `max_connections after: ${await postgres.setting("max_connections")} (PostgreSQL restarted ${bridge.restarts} time(s) by the rollout)`,
    );
    say("the pool env now in the Deployments:");
    show(
      kubectl(
        "get",
        "deployments",
        "-n",
        NAMESPACE,
        "-o",
        "custom-columns=NAME:.metadata.name,ENV:.spec.template.spec.containers[*].env[*].name,VALUES:.spec.template.spec.containers[*].env[*].value",
      ),
    );

    say("opening a session that stays idle in a transaction; the reaper should terminate it within ~15s");
    const session = new pg.Client({
      ...postgres.connection,
      database: "governance",
      application_name: "forgotten-transaction",
    });
    session.on("error", () => undefined);
    await session.connect();
    await session.query("BEGIN; SELECT 1");
    const pid = (await session.query("SELECT pg_backend_pid() AS pid")).rows[0].pid;
    show(`session pid ${pid}: BEGIN; SELECT 1; … (and nothing more)`);
    await waitFor(
      "the reaper",
      async () => (await postgres.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", [pid])).length === 0,
      { timeoutMs: 90_000, intervalMs: 500 },
    );
    say(`session ${pid} was terminated by the reaper. Events on the policy:`);
    show(
      kubectl(
        "get",
        "events.events.k8s.io",
        "-n",
        NAMESPACE,
        "--field-selector",
        "regarding.kind=PoolPolicy",
        "-o",
        "custom-columns=REASON:.reason,NOTE:.note",
      ),
    );
    say("kubectl describe pp governance (conditions):");
    show(
      kubectl(
        "get",
        "pp",
        "governance",
        "-n",
        NAMESPACE,
        "-o",
        'jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\\n"}{end}',
      ),
    );

    say("look around yourself:");
    show(
      `export KUBECONFIG=${plane.kubeconfigPath}\n${toolPath("kubectl")} get pp -n ${NAMESPACE}\n${toolPath("kubectl")} describe pp governance -n ${NAMESPACE}\noperator log: ${join(dir, "operator.log")}`,
    );
    await session.end().catch(() => undefined);
    if (process.env.DEMO_EXIT === "1") {
      await cleanup();
      return;
    }
    say("press Ctrl-C to stop and clean everything up");
    await new Promise(() => undefined);
  } catch (err) {
    console.error(`demo failed: ${(err as Error).message}`);
    await cleanup();
    process.exit(1);
  }
}

async function createDemoWorkloads(
  kc: KubeConfig,
  postgres: PostgresServer,
  redis: RedisServer,
): Promise<PostgresPodBridge> {
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  await core.createNamespace({ body: { metadata: { name: NAMESPACE } } });
  await core.createNamespacedSecret({
    namespace: NAMESPACE,
    body: { metadata: { name: "pg-admin" }, stringData: { username: postgres.superuser, password: postgres.password } },
  });
  await core.createNamespacedSecret({
    namespace: NAMESPACE,
    body: { metadata: { name: "redis" }, stringData: { url: redis.url } },
  });
  await core.createNamespacedService({ namespace: NAMESPACE, body: postgresService(NAMESPACE) });
  await apps.createNamespacedStatefulSet({ namespace: NAMESPACE, body: postgresStatefulSet(NAMESPACE) });
  const bridge = new PostgresPodBridge(kc, NAMESPACE, "postgres", [postgres]);
  bridge.start();
  await waitForStatefulSet(kc, NAMESPACE, "postgres");
  const partOf = { "app.kubernetes.io/part-of": "governance" };
  // Worst case with the rollout surge: (3 + 2 + 2) pods × 25 + the reserves stays under 200.
  for (const [name, replicas] of [
    ["api", 2],
    ["worker", 1],
    ["web", 1],
  ] as const) {
    await apps.createNamespacedDeployment({
      namespace: NAMESPACE,
      body: appDeployment(NAMESPACE, name, { labels: partOf, replicas }),
    });
  }
  return bridge;
}

function demoPolicy(port: number): Record<string, any> {
  const policy = load(readFileSync(join(repoRoot, "examples/poolpolicy.yaml"), "utf8")) as Record<string, any>;
  policy.spec.postgres.host = "127.0.0.1";
  policy.spec.postgres.port = port;
  policy.spec.reaper.interval = "5s";
  policy.spec.reaper.idleInTransactionTimeout = "10s";
  return policy;
}

/** Real pods when this machine can run them (DEMO=real insists, DEMO=kwok declines), else kwok's. */
async function main(): Promise<void> {
  const mode = process.env.DEMO ?? "";
  if (!["", "real", "kwok"].includes(mode)) {
    console.error(`DEMO=${mode}: expected DEMO=real (real pods, needs Docker and root) or DEMO=kwok (simulated pods)`);
    process.exit(2);
  }
  if (mode !== "kwok") {
    const why = realPodsUnavailable();
    if (why === undefined) return (await import("../e2e/demo.js")).realPodsDemo();
    if (mode === "real") {
      console.error(`DEMO=real: cannot run real pods here: ${why}`);
      process.exit(1);
    }
    say(`${why}: the story runs on kwok's simulated pods (on a machine with Docker, as root, it runs on real ones)`);
  }
  await kwokDemo();
}

void main();
