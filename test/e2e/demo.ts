/**
 * `make demo` on a machine with Docker: the user's story on real pods, told with the steps of
 * `make e2e` (story.ts) — a kubelet + containerd node joined to a local control plane, the images
 * built here, PostgreSQL at max_connections 20 and three app replicas whose pools of 10 exhaust
 * it, `helm install` of the chart, examples/poolpolicy.yaml applied, and what a user would watch
 * as it converges. Then it keeps running for the user's own kubectl until Ctrl-C (SIGINT or
 * SIGTERM), which removes everything: the pods, the node (containers, mounts, network namespaces),
 * the control plane and the temp folder. DEMO_EXIT=1 stops by itself once the story is told.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { policyReady, say, show, watchPolicyUntil } from "../harness/demo-output.js";
import { toolPath } from "../harness/tools.js";
import { demoNs, envOf, operatorNs, RealCluster, refusal } from "./story.js";

export async function realPodsDemo(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "poolpolicy-demo-"));
  const cluster = new RealCluster(dir);
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      say("cleaning up: the pods, the node (its daemons, containers, mounts, network namespaces), the control plane");
      await cluster.stop();
      rmSync(dir, { recursive: true, force: true });
    })());
  process.on("SIGINT", () => void cleanup().then(() => process.exit(0)));
  process.on("SIGTERM", () => void cleanup().then(() => process.exit(0)));

  try {
    say("Docker is usable here: the story runs on real pods (DEMO=kwok for the simulated ones)");
    say("the node's binaries and the images, from ~/.cache/poolpolicy-operator or built (a first run takes a while)");
    await cluster.prepare();
    say(`a control plane and a real node: containerd, kubelet, kube-proxy, CoreDNS (netns ${cluster.env.NODE_NETNS})`);
    await cluster.start();

    say("deploying PostgreSQL 15 (a StatefulSet, data on a persistent volume) and Redis, and governance-api:");
    show("three replicas of a Python service, each with an asyncpg pool of 10 connections");
    await cluster.deployWorkloads();
    say(`SHOW max_connections: ${await cluster.psql("SHOW max_connections")} — and 3 × 10 connections wanted`);
    say("the incident: waiting for the apps to be refused");
    await cluster.waitForIncident();
    for (const pod of await cluster.appPods()) {
      const name = pod.metadata!.name!;
      const refused = (await cluster.podLog(name)).split("\n").filter((line) => refusal.test(line));
      show(`${name}: ${refused.length} refused connection(s)${refused[0] ? `, e.g. ${refused[0]}` : ""}`);
    }
    await showConnections(cluster);

    say(`helm install poolpolicy-operator charts/poolpolicy-operator -n ${operatorNs} (image values only)`);
    show(`the namespace enforces Pod Security "restricted"`);
    show((await cluster.installOperator()).trimEnd());
    await cluster.waitForOperatorLeader();
    show(await cluster.kubectl("-n", operatorNs, "get", "pods", "-o", "wide"));

    const postgresUid = await postgresPodUid(cluster);
    say("kubectl apply -f examples/poolpolicy.yaml (the reaper's timings shortened to 5s/10s so you can watch it)");
    await cluster.applyExamplePolicy();
    await watchPolicyUntil(
      cluster.kc,
      demoNs,
      (...args) => cluster.kubectl(...args),
      () => policyReady(cluster.kc, demoNs, "governance"),
      ["-o", "wide"],
    );
    await cluster.waitForAppsRolled();
    say("kubectl describe pp governance -n demo");
    show((await cluster.kubectl("-n", demoNs, "describe", "pp", "governance")).trimEnd());

    const how =
      (await postgresPodUid(cluster)) !== postgresUid
        ? "postgres-0 was restarted by the StatefulSet controller and read it from its data directory"
        : "postgres-0 was not restarted";
    say(`SHOW max_connections: ${await cluster.psql("SHOW max_connections")} (${how})`);
    say("the apps rolled with the policy's pool env:");
    const pods = await cluster.appPods();
    for (const pod of pods) {
      const env = envOf(pod);
      show(
        `${pod.metadata!.name}: DB_POSTGRES_MIN_CONN=${env.DB_POSTGRES_MIN_CONN} MAX_CONN=${env.DB_POSTGRES_MAX_CONN}`,
      );
    }
    await cluster.waitForPools(pods);
    await showConnections(cluster);

    const kubectl = toolPath("kubectl");
    say("running. Look around yourself:");
    show(
      [
        `export KUBECONFIG=${cluster.kubeconfigPath} PATH=${dirname(kubectl)}:$PATH`,
        "kubectl get pp -n demo -o wide",
        "kubectl describe pp governance -n demo",
        "kubectl get pods -A -o wide",
        "kubectl logs -n demo deploy/governance-api",
        `kubectl logs -n ${operatorNs} deploy/poolpolicy-operator`,
        "kubectl exec -n demo postgres-0 -- psql -U postgres -d governance -c 'SHOW max_connections'",
      ].join("\n"),
    );
    if (process.env.DEMO_EXIT === "1") {
      await cleanup();
      return;
    }
    say("press Ctrl-C to stop and remove everything");
    await new Promise(() => undefined);
  } catch (err) {
    console.error(`demo failed: ${(err as Error).message}\n(DEMO=kwok tells the story on simulated pods instead)`);
    await cleanup();
    process.exit(1);
  }
}

/** pg_stat_activity, one row per app pod: the connections each pool holds. */
async function showConnections(cluster: RealCluster): Promise<void> {
  const rows = await cluster.psql(
    "SELECT application_name || ': ' || count(*) FROM pg_stat_activity WHERE usename = 'app' " +
      "GROUP BY application_name ORDER BY application_name",
  );
  say(`pg_stat_activity, connections per app pod (max_connections ${await cluster.psql("SHOW max_connections")}):`);
  show(rows || "(none)");
}

async function postgresPodUid(cluster: RealCluster): Promise<string> {
  return (await cluster.core.readNamespacedPod({ name: "postgres-0", namespace: demoNs })).metadata!.uid!;
}
