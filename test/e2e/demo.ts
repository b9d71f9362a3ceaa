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
      say(
        "cleaning up: the pods, the node (containerd, kubelet, kube-proxy, CoreDNS, its network namespace and mounts), the control plane",
      );
      await cluster.stop();
      rmSync(dir, { recursive: true, force: true });
    })());
  process.on("SIGINT", () => void cleanup().then(() => process.exit(0)));
  process.on("SIGTERM", () => void cleanup().then(() => process.exit(0)));

  try {
    say("Docker is usable here: the story runs on real pods (DEMO=kwok for the simulated ones)");
    say(
      "building the node's binaries and the images, or taking them from ~/.cache/poolpolicy-operator (a first run takes a while)",
    );
    await cluster.prepare();
    say(
      `starting a control plane and a real node (containerd, kubelet, kube-proxy, CoreDNS in network namespace ${cluster.env.NODE_NETNS})`,
    );
    await cluster.start();

    say(
      "deploying PostgreSQL 15 (a StatefulSet with a persistent volume), Redis, and governance-api: three replicas of a Python service with an asyncpg pool of 10 each",
    );
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

    say(
      `helm install poolpolicy-operator charts/poolpolicy-operator -n ${operatorNs} (Pod Security "restricted"; only the image values set)`,
    );
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

    const restarted = (await postgresPodUid(cluster)) !== postgresUid;
    say(
      `SHOW max_connections: ${await cluster.psql("SHOW max_connections")} (postgres-0 ${restarted ? "was restarted by the StatefulSet controller" : "was not restarted"}; the value came back from its data directory)`,
    );
    say("the apps rolled with the policy's pool env:");
    const pods = await cluster.appPods();
    for (const pod of pods) {
      const env = envOf(pod);
      show(
        `${pod.metadata!.name}: DB_POSTGRES_MIN_CONN=${env.DB_POSTGRES_MIN_CONN} DB_POSTGRES_MAX_CONN=${env.DB_POSTGRES_MAX_CONN}`,
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
    console.error(`demo failed: ${(err as Error).message}`);
    await cleanup();
    process.exit(1);
  }
}

/** pg_stat_activity, one row per app pod: the connections each pool holds. */
async function showConnections(cluster: RealCluster): Promise<void> {
  const rows = await cluster.psql(
    "SELECT application_name || ': ' || count(*) FROM pg_stat_activity WHERE usename = 'app' GROUP BY application_name ORDER BY 1",
  );
  say(`pg_stat_activity, connections per app pod (max_connections ${await cluster.psql("SHOW max_connections")}):`);
  show(rows || "(none)");
}

async function postgresPodUid(cluster: RealCluster): Promise<string> {
  return (await cluster.core.readNamespacedPod({ name: "postgres-0", namespace: demoNs })).metadata!.uid!;
}
