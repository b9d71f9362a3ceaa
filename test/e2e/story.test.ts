/**
 * The user's story on a real node (make e2e): real pods, from images built here, on a kubelet
 * joined to the harness's control plane (test/e2e/node.ts).
 *
 *   1. the incident: PostgreSQL 15 at max_connections 20 (data on a hostPath PersistentVolume),
 *      three replicas of a Python service whose asyncpg pools hold 10 connections each →
 *      PostgreSQL refuses connections;
 *   2. `helm install` of charts/poolpolicy-operator (only the image values set) into a namespace
 *      that enforces Pod Security "restricted": the operator runs our image as 65532 with a
 *      read-only root filesystem and talks to the API server with its ServiceAccount token; a
 *      `helm upgrade` replaces the pod, the old one releases the Lease on SIGTERM and the new one
 *      takes it; /metrics answers through the Service, from another pod;
 *   3. the example PoolPolicy (only its reaper timings shortened): the StatefulSet controller and
 *      kubelet really restart PostgreSQL, max_connections comes back as 200 from its data
 *      directory, the apps roll with DB_POSTGRES_MIN/MAX_CONN, open pools within those bounds,
 *      and run 60 s without a connection error;
 *   4. a session left idle in a transaction by an app pod is terminated by the reaper;
 *   5. the pooler: `helm upgrade` with pooler.enabled, a second app whose policy declares a
 *      PgBouncer and goes through it: PgBouncer runs in a pod from the objects the operator
 *      applied (the image built here from Debian's package), with the per-pod cap the operator
 *      computed; the app's pods are pointed at its Service and PostgreSQL sees their sessions
 *      come from PgBouncer's pod; a growth of the share (the direct app scaled down) reaches the
 *      running PgBouncer (the kubelet updates the mounted ConfigMap, the pod's watcher sends
 *      SIGHUP) without a new pod;
 *   6. `kubectl get/describe pp`, deleting the policies and `helm uninstall` leave the apps
 *      without our env entries, and the pooler's objects go with their policy.
 *
 * Each step depends on the one before: they run in order, and after a failure the rest are skipped.
 * Before the story, a check that the node's daemons run with their own least-privilege
 * identities (test/e2e/node.ts), not the admin's: the story then proves those identities suffice.
 */
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { waitFor } from "../harness/processes.js";
import { repoRoot, toolPath } from "../harness/tools.js";
import { type NodeComponent, nodeName } from "./node.js";
import {
  demoNs as demo,
  envOf,
  operatorNs,
  pooledLabel,
  poolerLabel,
  poolerPort,
  RealCluster,
  release,
} from "./story.js";

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), "poolpolicy-e2e-"));
const cluster = new RealCluster(dir);
const kubectl = (...args: string[]) => cluster.kubectl(...args);
const psql = (sql: string) => cluster.psql(sql);
const appPods = () => cluster.appPods();
const podLog = (name: string, sinceSeconds?: number) => cluster.podLog(name, sinceSeconds);

beforeAll(async () => {
  await cluster.prepare();
  await cluster.start();
}, 3_600_000);

afterAll(async () => {
  await cluster.stop();
  if (!process.env.POOLPOLICY_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
}, 300_000);

describe("the real node's identities", () => {
  const whoami = async (component: NodeComponent) => {
    const review = JSON.parse(await cluster.kubectlAs(component, "auth", "whoami", "-o", "json"));
    return review.status.userInfo as { username: string; groups?: string[] };
  };

  it("kubelet, kube-proxy and CoreDNS each authenticate as themselves, none of them an admin", async () => {
    const kubelet = await whoami("kubelet");
    expect(kubelet.username).toBe(`system:node:${nodeName}`);
    expect(kubelet.groups).toContain("system:nodes");
    expect((await whoami("kube-proxy")).username).toBe("system:kube-proxy");
    expect((await whoami("coredns")).username).toBe("poolpolicy-e2e:coredns");
    for (const component of ["kubelet", "kube-proxy", "coredns"] as const) {
      expect((await whoami(component)).groups ?? [], component).not.toContain("system:masters");
      expect(await cluster.allowed(component, { verb: "*", group: "*", resource: "*" }), component).toBe(false);
      expect(await cluster.allowed(component, { verb: "list", resource: "secrets" }), component).toBe(false);
    }
  });

  it("each may do what its work needs and not more", async () => {
    // The Node authorizer: a kubelet reads its own Node, no other.
    expect(await cluster.allowed("kubelet", { verb: "get", resource: "nodes", name: nodeName })).toBe(true);
    expect(await cluster.allowed("kubelet", { verb: "get", resource: "nodes", name: "another-node" })).toBe(false);
    // The default ClusterRoleBinding system:node-proxier.
    const endpointSlices = { group: "discovery.k8s.io", resource: "endpointslices" };
    expect(await cluster.allowed("kube-proxy", { verb: "watch", ...endpointSlices })).toBe(true);
    expect(await cluster.allowed("kube-proxy", { verb: "create", resource: "pods", namespace: demo })).toBe(false);
    // CoreDNS's own ClusterRole: list and watch of what it serves, pods not among them.
    expect(await cluster.allowed("coredns", { verb: "watch", resource: "services" })).toBe(true);
    expect(await cluster.allowed("coredns", { verb: "list", resource: "pods" })).toBe(false);
    // NodeRestriction (admission, after authorization let the kubelet patch its own Node): no
    // label under node-restriction.kubernetes.io/, the prefix kept for what only admins may set.
    await expect(
      cluster.kubectlAs("kubelet", "label", "node", nodeName, "node-restriction.kubernetes.io/e2e=yes"),
    ).rejects.toThrow(/is not allowed to modify labels: node-restriction\.kubernetes\.io\/e2e/);
  });
});

describe("the user's story on a real node", () => {
  let postgresPodUid = "";
  // Each step builds on the one before: after a failure the later steps are skipped (and
  // reported as skipped), not run against a half-made state.
  let failedStep: string | undefined;
  beforeEach((ctx) => {
    if (failedStep) ctx.skip(`skipped: "${failedStep}" failed`);
  });
  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail") failedStep ??= ctx.task.name;
  });

  it("PostgreSQL runs in a pod on the node, its data on a persistent volume", async () => {
    await cluster.deployWorkloads();
    postgresPodUid = (await cluster.core.readNamespacedPod({ name: "postgres-0", namespace: demo })).metadata!.uid!;
    expect(await psql("SHOW max_connections")).toBe("20");
    const claim = await cluster.core.readNamespacedPersistentVolumeClaim({ name: "data-postgres-0", namespace: demo });
    expect(claim.spec?.volumeName).toBe("e2e-postgres");
  });

  it("the incident: three replicas with pools of 10 exhaust max_connections 20", async () => {
    await cluster.waitForIncident();
    expect(await cluster.appLogs()).toMatch(/pool min=10 max=10 source=default/);
  });

  it("helm install runs our image as a restricted pod that talks to the API server in-cluster", async () => {
    await cluster.installOperator();
    const ns = await cluster.core.readNamespace({ name: operatorNs });
    expect(ns.metadata?.labels?.["pod-security.kubernetes.io/enforce"]).toBe("restricted");
    const [pod] = (await cluster.core.listNamespacedPod({ namespace: operatorNs })).items;
    expect(pod?.spec?.containers[0]?.image).toBe(cluster.images.OPERATOR_IMAGE);
    // What the kernel says of the running process: UID 65532, and a root filesystem it cannot write.
    const status = await kubectl("-n", operatorNs, "exec", pod!.metadata!.name!, "--", "cat", "/proc/1/status");
    expect(status).toMatch(/^Uid:\s+65532\s+65532/m);
    const write = await kubectl(
      "-n",
      operatorNs,
      "exec",
      pod!.metadata!.name!,
      "--",
      "sh",
      "-c",
      "touch /x 2>&1; true",
    );
    expect(write).toMatch(/Read-only file system/);
    await cluster.waitForOperatorLeader();
  });

  it("helm upgrade hands the Lease over on SIGTERM; /metrics answers through the Service", async () => {
    const [old] = (await cluster.core.listNamespacedPod({ namespace: operatorNs })).items;
    const oldName = old!.metadata!.name!;
    // Follow the old pod's log until it exits: what it says on SIGTERM is gone with the pod.
    const follower = spawn(toolPath("kubectl"), [
      `--kubeconfig=${cluster.kubeconfigPath}`,
      "-n",
      operatorNs,
      "logs",
      "-f",
      oldName,
    ]);
    let oldLog = "";
    follower.stdout.on("data", (d: Buffer) => (oldLog += d.toString()));
    const followed = new Promise((resolve) => follower.on("exit", resolve));
    try {
      await run(
        toolPath("helm"),
        [
          "upgrade",
          release,
          join(repoRoot, "charts/poolpolicy-operator"),
          "-n",
          operatorNs,
          "--reuse-values",
          "--set-string",
          "podAnnotations.e2e/upgrade=1",
          "--wait",
          "--timeout=5m",
        ],
        { env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath } },
      );
      await waitFor("the old operator pod to be gone", async () => {
        const pods = (await cluster.core.listNamespacedPod({ namespace: operatorNs })).items;
        return pods.every((p) => p.metadata!.name !== oldName);
      });
      await followed;
    } finally {
      follower.kill();
    }
    expect(oldLog).toMatch(/"signal":"SIGTERM"/);
    expect(oldLog).toMatch(/released the leader lease/);
    const [fresh] = (await cluster.core.listNamespacedPod({ namespace: operatorNs })).items;
    await waitFor(
      "the new pod to hold the Lease",
      async () =>
        (await kubectl("-n", operatorNs, "get", "lease", release, "-o", "jsonpath={.spec.holderIdentity}")).startsWith(
          fresh!.metadata!.name!,
        ),
      { timeoutMs: 60_000, intervalMs: 1_000 },
    );
    // Scraped as Prometheus would: by the Service's name, from another pod, through kube-proxy.
    const [app] = await appPods();
    const metrics = await kubectl(
      "-n",
      demo,
      "exec",
      app!.metadata!.name!,
      "--",
      "python3",
      "-c",
      `import urllib.request; print(urllib.request.urlopen("http://${release}.${operatorNs}.svc.cluster.local:8080/metrics").read().decode())`,
    );
    expect(metrics).toMatch(/^leader_election_master_status\{name="poolpolicy-operator"\} 1$/m);
  });

  it("the example policy restarts PostgreSQL for real and rolls the apps with the pool env", async () => {
    await cluster.applyExamplePolicy();
    await cluster.waitForPolicyReady();
    const pg = await cluster.core.readNamespacedPod({ name: "postgres-0", namespace: demo });
    expect(pg.metadata?.uid).not.toBe(postgresPodUid);
    expect(await psql("SHOW max_connections")).toBe("200");

    const deployment = await cluster.apps.readNamespacedDeployment({ name: "governance-api", namespace: demo });
    expect(envOf(deployment.spec!.template)).toMatchObject({ DB_POSTGRES_MIN_CONN: "5", DB_POSTGRES_MAX_CONN: "25" });
    await cluster.waitForAppsRolled();
  });

  it("the apps run 60 s with pools within the policy's bounds and no connection error", async () => {
    const pods = await appPods();
    await cluster.waitForPools(pods);
    await new Promise((r) => setTimeout(r, 60_000));
    for (const pod of pods) {
      const name = pod.metadata!.name!;
      const log = await podLog(name, 60);
      expect(log).toMatch(/pool min=5 max=25 source=env|stats ok=/);
      expect(log, `${name} logged a connection error`).not.toMatch(/^error /m);
      const stats = [...log.matchAll(/stats ok=(\d+) errors=(\d+) pool=(\d+)/g)];
      expect(stats.length).toBeGreaterThan(5);
      const open = Number(await psql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = '${name}'`));
      expect(open).toBeGreaterThanOrEqual(5);
      expect(open).toBeLessThanOrEqual(25);
    }
  });

  it("a session left idle in a transaction by an app pod is terminated", async () => {
    const [pod] = await appPods();
    const holder = spawn(toolPath("kubectl"), [
      `--kubeconfig=${cluster.kubeconfigPath}`,
      "-n",
      demo,
      "exec",
      pod!.metadata!.name!,
      "--",
      "python3",
      "-c",
      idleInTransactionHolder,
    ]);
    let output = "";
    holder.stdout.on("data", (d: Buffer) => (output += d.toString()));
    holder.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => holder.on("exit", resolve));
    try {
      await waitFor(
        "the held session to be idle in transaction",
        async () =>
          (await psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'idle-holder' AND state = 'idle in transaction'",
          )) === "1",
        { timeoutMs: 60_000, intervalMs: 1_000 },
      );
      await waitFor(
        "the reaper to terminate it",
        async () =>
          (await psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'idle-holder'")) === "0",
        { timeoutMs: 120_000, intervalMs: 1_000 },
      );
      await exited;
      // The client saw the server end its session (asyncpg: "connection is closed").
      expect(output).toMatch(/^ended: /m);
      expect(output).not.toMatch(/still open/);
    } finally {
      holder.kill();
    }
  });

  it("a PgBouncer the operator sized runs in a pod, the pooled app goes through it, and a growth is reloaded in place", async () => {
    await cluster.enablePooler();
    await cluster.applyPooledApp();
    await kubectl("-n", demo, "wait", "--for=condition=Ready", "pp/pooled", "--timeout=300s");
    const perPod = async () => {
      const policy = JSON.parse(await kubectl("-n", demo, "get", "pp", "pooled", "-o", "json"));
      const sized = policy.status.conditions.find((c: { type: string }) => c.type === "PoolerSized");
      return Number(/(\d+) server connections per pod/.exec(sized?.message ?? "")?.[1]);
    };
    // max_connections 200 − 5 reserved − governance-api's (3 + 1 surge) × 25 = 95, over 1 + 1 pods.
    expect(await perPod()).toBe(47);

    // PgBouncer runs in a pod on the node, with the cap the operator computed.
    // (Ready may come before PgBouncer's pod is: the apps connect directly until it is.)
    const poolerPods = async () =>
      (await cluster.core.listNamespacedPod({ namespace: demo, labelSelector: poolerLabel })).items.filter(
        (p) =>
          !p.metadata?.deletionTimestamp &&
          p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
      );
    await waitFor("PgBouncer's pod to be Ready", async () => (await poolerPods()).length === 1, {
      timeoutMs: 180_000,
      intervalMs: 1_000,
    });
    const [pooler] = await poolerPods();
    const poolerName = pooler!.metadata!.name!;
    expect((await cluster.poolerConfig(poolerName)).max_db_connections).toBe("47");

    // The pooled app's pods: pointed at the pooler's Service, their pools open through it.
    let pods = await cluster.runningPods(pooledLabel);
    await waitFor(
      "two pooled-api pods with the pooler's address, and no other",
      async () => {
        pods = await cluster.runningPods(pooledLabel);
        return pods.length === 2 && pods.every((p) => envOf(p).DB_POSTGRES_HOST === `pgbouncer.${demo}.svc`);
      },
      { timeoutMs: 180_000, intervalMs: 1_000 },
    );
    await kubectl("-n", demo, "rollout", "status", "deployment/pooled-api", "--timeout=300s");
    for (const p of pods) expect(envOf(p)).toMatchObject({ DB_POSTGRES_PORT: String(poolerPort) });
    const to = `to=pgbouncer.${demo}.svc:${poolerPort}`;
    await waitFor(
      "the pooled app's pods to run queries through the pooler",
      async () => {
        for (const p of pods) {
          const log = await podLog(p.metadata!.name!);
          if (!log.includes(to) || !/stats ok=[1-9]/.test(log)) return false;
        }
        return true;
      },
      { timeoutMs: 120_000, intervalMs: 2_000 },
    );
    for (const p of pods) expect(await podLog(p.metadata!.name!)).not.toMatch(/^error /m);
    // PostgreSQL sees the app's sessions coming from PgBouncer's pod, none from the app's pods.
    const sessionsFrom = async (ips: string[]) =>
      Number(
        await psql(
          `SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND host(client_addr) IN (${ips.map((ip) => `'${ip}'`).join(", ")})`,
        ),
      );
    const throughPooler = await sessionsFrom([pooler!.status!.podIP!]);
    expect(throughPooler).toBeGreaterThan(0);
    expect(throughPooler).toBeLessThanOrEqual(47);
    expect(await sessionsFrom(pods.map((p) => p.status!.podIP!))).toBe(0);

    // A growth: governance-api at 2 replicas is (2 + 1) × 25 = 75 direct, 120 left, 60 per pod.
    // The operator changes the ConfigMap only (no roll); the running PgBouncer takes it.
    const before = await cluster.apps.readNamespacedDeployment({ name: "pgbouncer", namespace: demo });
    await kubectl("-n", demo, "scale", "deployment/governance-api", "--replicas=2");
    await waitFor("PoolerSized with 60 per pod", async () => (await perPod()) === 60, { timeoutMs: 120_000 });
    await waitFor(
      "the running PgBouncer to take max_db_connections 60 (the kubelet updates the file within about a minute)",
      async () => (await cluster.poolerConfig(poolerName)).max_db_connections === "60",
      { timeoutMs: 240_000, intervalMs: 3_000 },
    );
    const after = await cluster.apps.readNamespacedDeployment({ name: "pgbouncer", namespace: demo });
    expect(after.metadata?.generation).toBe(before.metadata?.generation);
    const [still] = await poolerPods();
    expect(still?.metadata?.uid).toBe(pooler!.metadata!.uid);
    expect(still?.status?.containerStatuses?.[0]?.restartCount).toBe(0);
    // The app's sessions stayed through the reload.
    for (const p of pods) expect(await podLog(p.metadata!.name!)).not.toMatch(/^error /m);
  });

  it("kubectl shows the policy; deleting it and uninstalling the chart leave the apps without our env", async () => {
    expect(await kubectl("-n", demo, "get", "pp")).toMatch(/governance/);
    expect(await kubectl("-n", demo, "describe", "pp", "governance")).toMatch(/Ready/);
    await kubectl("-n", demo, "delete", "pp", "governance", "--timeout=120s");
    // The pooled policy too: the garbage collector takes the pooler it owns.
    await kubectl("-n", demo, "delete", "pp", "pooled", "--timeout=120s");
    await waitFor("the pooler's Deployment to go with its policy", async () => {
      const list = await cluster.apps.listNamespacedDeployment({ namespace: demo, labelSelector: poolerLabel });
      return list.items.length === 0;
    });
    await waitFor("the apps' template to lose DB_POSTGRES_*", async () => {
      const d = await cluster.apps.readNamespacedDeployment({ name: "governance-api", namespace: demo });
      return !Object.keys(envOf(d.spec!.template)).some((k) => k.startsWith("DB_POSTGRES_"));
    });
    await run(toolPath("helm"), ["uninstall", release, "-n", operatorNs, "--wait", "--timeout=2m"], {
      env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
    });
    expect((await cluster.apps.listNamespacedDeployment({ namespace: operatorNs })).items).toEqual([]);
    const d = await cluster.apps.readNamespacedDeployment({ name: "governance-api", namespace: demo });
    expect(Object.keys(envOf(d.spec!.template)).filter((k) => k.startsWith("DB_POSTGRES_"))).toEqual([]);
  });
});

/** Opens one session as the app's role, leaves it idle in a transaction, and reports how it ends. */
const idleInTransactionHolder = `
import asyncio, os, asyncpg
async def main():
    conn = await asyncpg.connect(host=os.environ["DB_HOST"], database=os.environ["DB_NAME"],
        user=os.environ["DB_USER"], password=os.environ["DB_PASSWORD"],
        server_settings={"application_name": "idle-holder"})
    tx = conn.transaction(); await tx.start(); await conn.execute("SELECT 1")
    for _ in range(180):
        await asyncio.sleep(1)
        if conn.is_closed(): break
    try:
        await conn.execute("SELECT 1")
        print("still open")
    except Exception as err:
        print(f"ended: {type(err).__name__}: {err}")
asyncio.run(main())
`;
