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
 *   5. `kubectl get/describe pp`, deleting the policy and `helm uninstall` leave the apps
 *      without our env entries.
 *
 * Each step depends on the one before: they run in order, and after a failure the rest are skipped.
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { AppsV1Api, CoreV1Api, type KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { dump, load } from "js-yaml";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ControlPlane } from "../harness/controlplane.js";
import { waitFor } from "../harness/processes.js";
import { repoRoot, toolPath } from "../harness/tools.js";
import { nodeEnv, parseEnv, RealNode } from "./node.js";

const run = promisify(execFile);
const demo = "demo";
const operatorNs = "poolpolicy-system";
const release = "poolpolicy-operator";
const appLabel = "app.kubernetes.io/name=governance-api";
/** PostgreSQL's two refusals when no slot is left (the second for ordinary roles while reserved slots remain). */
const refusal = /sorry, too many clients already|remaining connection slots are reserved/;

const env = nodeEnv();
const dir = mkdtempSync(join(tmpdir(), "poolpolicy-e2e-"));
const controlPlane = new ControlPlane({
  dir: join(dir, "cp"),
  address: env.NODE_HOST_IP,
  serviceClusterIpRange: env.NODE_SERVICE_CIDR,
  fakeNode: false,
});
let node: RealNode | undefined;
let kc: KubeConfig;
let core: CoreV1Api;
let apps: AppsV1Api;
let images: Record<string, string>;
const pgPassword = randomBytes(12).toString("hex");
const appPassword = randomBytes(12).toString("hex");

/** kubectl against the test's control plane; returns stdout, throws with stderr. */
async function kubectl(...args: string[]): Promise<string> {
  try {
    const { stdout } = await run(toolPath("kubectl"), [`--kubeconfig=${controlPlane.kubeconfigPath}`, ...args], {
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`kubectl ${args.join(" ")} failed: ${e.stderr || e.message}`);
  }
}

async function kubectlApply(manifest: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn(toolPath("kubectl"), [`--kubeconfig=${controlPlane.kubeconfigPath}`, "apply", "-f", "-"]);
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`kubectl apply failed: ${stderr}`))));
    child.stdin.end(manifest);
  });
}

/** psql in the PostgreSQL pod, as the admin over the local socket; the result as text. */
async function psql(sql: string): Promise<string> {
  return (
    await kubectl("-n", demo, "exec", "postgres-0", "--", "psql", "-U", "postgres", "-d", "governance", "-tAc", sql)
  ).trim();
}

async function appPods(): Promise<V1Pod[]> {
  const list = await core.listNamespacedPod({ namespace: demo, labelSelector: appLabel });
  return list.items.filter((p) => !p.metadata?.deletionTimestamp && p.status?.phase === "Running");
}

async function podLog(name: string, sinceSeconds?: number): Promise<string> {
  return core.readNamespacedPodLog({ name, namespace: demo, sinceSeconds });
}

function envOf(pod: { spec?: { containers: { env?: { name: string; value?: string }[] }[] } }): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of pod.spec?.containers[0]?.env ?? []) out[e.name] = e.value ?? "";
  return out;
}

beforeAll(async () => {
  // Both are cached: a warm run builds nothing (tools/build-node.sh, tools/e2e/images.sh).
  execFileSync("bash", [join(repoRoot, "tools/build-node.sh")], { stdio: "inherit" });
  const imagesEnv = join(dir, "images.env");
  execFileSync("bash", [join(repoRoot, "tools/e2e/images.sh"), imagesEnv], { stdio: "inherit" });
  images = parseEnv(readFileSync(imagesEnv, "utf8"));
  const binDir = execFileSync("bash", [join(repoRoot, "tools/build-node.sh"), "--print-dir"], { encoding: "utf8" });

  node = new RealNode({
    binDir: binDir.trim(),
    imageTars: ["PAUSE", "OPERATOR", "POSTGRES", "REDIS", "APP"].map((n) => images[`${n}_TAR`]!),
    pauseImage: images.PAUSE_IMAGE!,
    dir: join(dir, "node"),
  });
  node.up();
  await controlPlane.start();
  node.connect(controlPlane.server, controlPlane.info().adminToken);
  kc = controlPlane.kubeConfig();
  core = kc.makeApiClient(CoreV1Api);
  apps = kc.makeApiClient(AppsV1Api);
  await node.start(kc);
}, 3_600_000);

afterAll(async () => {
  // Namespaces first, so kubelet stops the pods itself (CNI DEL, sandboxes removed); then the
  // node's teardown removes whatever is left, also after a failure half-way.
  if (node && kc) {
    for (const ns of [demo, operatorNs]) await core.deleteNamespace({ name: ns }).catch(() => undefined);
    await waitFor("the test's pods to be gone", async () => (await core.listPodForAllNamespaces()).items.length === 0, {
      timeoutMs: 90_000,
      intervalMs: 1_000,
    }).catch((err: Error) => console.error(`cleanup: ${err.message}; the node's teardown removes them`));
  }
  await node?.stop();
  await controlPlane.stop();
  if (!process.env.POOLPOLICY_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
}, 300_000);

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
    await kubectlApply(workloads());
    await waitFor(
      "postgres-0 to be Ready",
      async () => {
        node!.assertRunning();
        const pod = await core.readNamespacedPod({ name: "postgres-0", namespace: demo });
        return pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
      },
      { timeoutMs: 180_000, intervalMs: 1_000 },
    );
    postgresPodUid = (await core.readNamespacedPod({ name: "postgres-0", namespace: demo })).metadata!.uid!;
    expect(await psql("SHOW max_connections")).toBe("20");
    const claim = await core.readNamespacedPersistentVolumeClaim({ name: "data-postgres-0", namespace: demo });
    expect(claim.spec?.volumeName).toBe("e2e-postgres");
  });

  it("the incident: three replicas with pools of 10 exhaust max_connections 20", async () => {
    const allLogs = async () => (await Promise.all((await appPods()).map((p) => podLog(p.metadata!.name!)))).join("\n");
    // The apps find PostgreSQL by its Service name (CoreDNS) and are refused. (Whether one of
    // them gets its 10 first is a race: asyncpg drops a pool whose first 10 connections did not
    // all open, so three apps retrying together can all keep failing.)
    await waitFor("an app to log PostgreSQL's refusal", async () => refusal.test(await allLogs()), {
      timeoutMs: 180_000,
      intervalMs: 2_000,
    });
    expect(await allLogs()).toMatch(/pool min=10 max=10 source=default/);
  });

  it("helm install runs our image as a restricted pod that talks to the API server in-cluster", async () => {
    await run("bash", [join(repoRoot, "tools/e2e/install-operator.sh"), ...splitImage(images.OPERATOR_IMAGE!)], {
      env: {
        ...process.env,
        KUBECONFIG: controlPlane.kubeconfigPath,
        KUBECTL: toolPath("kubectl"),
        HELM: toolPath("helm"),
        OPERATOR_NAMESPACE: operatorNs,
        RELEASE: release,
      },
    });
    const ns = await core.readNamespace({ name: operatorNs });
    expect(ns.metadata?.labels?.["pod-security.kubernetes.io/enforce"]).toBe("restricted");
    const [pod] = (await core.listNamespacedPod({ namespace: operatorNs })).items;
    expect(pod?.spec?.containers[0]?.image).toBe(images.OPERATOR_IMAGE);
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
    await waitFor(
      "the operator to become leader",
      async () => (await kubectl("-n", operatorNs, "logs", pod!.metadata!.name!)).includes("became leader"),
      { timeoutMs: 60_000, intervalMs: 1_000 },
    );
  });

  it("helm upgrade hands the Lease over on SIGTERM; /metrics answers through the Service", async () => {
    const [old] = (await core.listNamespacedPod({ namespace: operatorNs })).items;
    const oldName = old!.metadata!.name!;
    // Follow the old pod's log until it exits: what it says on SIGTERM is gone with the pod.
    const follower = spawn(toolPath("kubectl"), [
      `--kubeconfig=${controlPlane.kubeconfigPath}`,
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
        { env: { ...process.env, KUBECONFIG: controlPlane.kubeconfigPath } },
      );
      await waitFor("the old operator pod to be gone", async () => {
        const pods = (await core.listNamespacedPod({ namespace: operatorNs })).items;
        return pods.every((p) => p.metadata!.name !== oldName);
      });
      await followed;
    } finally {
      follower.kill();
    }
    expect(oldLog).toMatch(/"signal":"SIGTERM"/);
    expect(oldLog).toMatch(/released the leader lease/);
    const [fresh] = (await core.listNamespacedPod({ namespace: operatorNs })).items;
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
    await kubectlApply(examplePolicy());
    await kubectl("-n", demo, "wait", "--for=condition=Ready", "pp/governance", "--timeout=300s");
    const pg = await core.readNamespacedPod({ name: "postgres-0", namespace: demo });
    expect(pg.metadata?.uid).not.toBe(postgresPodUid);
    expect(await psql("SHOW max_connections")).toBe("200");

    const deployment = await apps.readNamespacedDeployment({ name: "governance-api", namespace: demo });
    expect(envOf(deployment.spec!.template)).toMatchObject({ DB_POSTGRES_MIN_CONN: "5", DB_POSTGRES_MAX_CONN: "25" });
    await kubectl("-n", demo, "rollout", "status", "deployment/governance-api", "--timeout=300s");
    await waitFor("three app pods with the policy's env", async () => {
      const pods = await appPods();
      return pods.length === 3 && pods.every((p) => envOf(p).DB_POSTGRES_MAX_CONN === "25");
    });
  });

  it("the apps run 60 s with pools within the policy's bounds and no connection error", async () => {
    const pods = await appPods();
    await waitFor(
      "every app pod's pool to be open",
      async () => {
        for (const p of pods) if (!(await podLog(p.metadata!.name!)).includes("pool=")) return false;
        return true;
      },
      { timeoutMs: 60_000, intervalMs: 1_000 },
    );
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
      `--kubeconfig=${controlPlane.kubeconfigPath}`,
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

  it("kubectl shows the policy; deleting it and uninstalling the chart leave the apps without our env", async () => {
    expect(await kubectl("-n", demo, "get", "pp")).toMatch(/governance/);
    expect(await kubectl("-n", demo, "describe", "pp", "governance")).toMatch(/Ready/);
    await kubectl("-n", demo, "delete", "pp", "governance", "--timeout=120s");
    await waitFor("the apps' template to lose DB_POSTGRES_*", async () => {
      const d = await apps.readNamespacedDeployment({ name: "governance-api", namespace: demo });
      return !Object.keys(envOf(d.spec!.template)).some((k) => k.startsWith("DB_POSTGRES_"));
    });
    await run(toolPath("helm"), ["uninstall", release, "-n", operatorNs, "--wait", "--timeout=2m"], {
      env: { ...process.env, KUBECONFIG: controlPlane.kubeconfigPath },
    });
    expect((await apps.listNamespacedDeployment({ namespace: operatorNs })).items).toEqual([]);
    const d = await apps.readNamespacedDeployment({ name: "governance-api", namespace: demo });
    expect(Object.keys(envOf(d.spec!.template)).filter((k) => k.startsWith("DB_POSTGRES_"))).toEqual([]);
  });
});

/** "repo/name:tag" → ["repo/name", "tag"]. */
function splitImage(image: string): [string, string] {
  const colon = image.lastIndexOf(":");
  return [image.slice(0, colon), image.slice(colon + 1)];
}

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

/** PostgreSQL (hostPath PV under the node's data folder), Redis, and the app Deployment. */
function workloads(): string {
  const pvPath = join(env.NODE_DATA_DIR, "pv", "postgres");
  const docs: object[] = [
    { apiVersion: "v1", kind: "Namespace", metadata: { name: demo } },
    secret("pg-admin", { username: "postgres", password: pgPassword }),
    secret("app-db", { username: "app", password: appPassword }),
    secret("redis", { url: `redis://redis.${demo}.svc.cluster.local:6379/0` }),
    {
      // A volume on the node's disk: ALTER SYSTEM writes postgresql.auto.conf into PGDATA, and
      // the restart the operator asks for must find it there.
      apiVersion: "v1",
      kind: "PersistentVolume",
      metadata: { name: "e2e-postgres" },
      spec: {
        capacity: { storage: "1Gi" },
        accessModes: ["ReadWriteOnce"],
        storageClassName: "e2e-local",
        persistentVolumeReclaimPolicy: "Delete",
        hostPath: { path: pvPath, type: "DirectoryOrCreate" },
      },
    },
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "postgres", namespace: demo },
      spec: {
        clusterIP: "None",
        selector: { "app.kubernetes.io/name": "postgres" },
        ports: [{ name: "postgres", port: 5432, targetPort: 5432 }],
      },
    },
    {
      apiVersion: "apps/v1",
      kind: "StatefulSet",
      metadata: { name: "postgres", namespace: demo },
      spec: {
        serviceName: "postgres",
        replicas: 1,
        selector: { matchLabels: { "app.kubernetes.io/name": "postgres" } },
        template: {
          metadata: { labels: { "app.kubernetes.io/name": "postgres" } },
          spec: {
            terminationGracePeriodSeconds: 30,
            containers: [
              {
                name: "postgres",
                image: images.POSTGRES_IMAGE,
                imagePullPolicy: "Never",
                env: [
                  secretEnv("POSTGRES_USER", "pg-admin", "username"),
                  secretEnv("POSTGRES_PASSWORD", "pg-admin", "password"),
                  { name: "POSTGRES_DB", value: "governance" },
                  secretEnv("APP_USER", "app-db", "username"),
                  secretEnv("APP_PASSWORD", "app-db", "password"),
                  { name: "PGDATA", value: "/var/lib/postgresql/data/pgdata" },
                  { name: "POSTGRES_INITDB_CONF", value: "max_connections = 20" },
                ],
                ports: [{ name: "postgres", containerPort: 5432 }],
                readinessProbe: {
                  exec: { command: ["pg_isready", "-h", "127.0.0.1", "-d", "governance"] },
                  periodSeconds: 2,
                },
                volumeMounts: [{ name: "data", mountPath: "/var/lib/postgresql/data" }],
              },
            ],
          },
        },
        volumeClaimTemplates: [
          {
            metadata: { name: "data" },
            spec: {
              accessModes: ["ReadWriteOnce"],
              storageClassName: "e2e-local",
              resources: { requests: { storage: "1Gi" } },
            },
          },
        ],
      },
    },
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "redis", namespace: demo },
      spec: {
        replicas: 1,
        selector: { matchLabels: { "app.kubernetes.io/name": "redis" } },
        template: {
          metadata: { labels: { "app.kubernetes.io/name": "redis" } },
          spec: {
            containers: [
              {
                name: "redis",
                image: images.REDIS_IMAGE,
                imagePullPolicy: "Never",
                ports: [{ name: "redis", containerPort: 6379 }],
              },
            ],
          },
        },
      },
    },
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "redis", namespace: demo },
      spec: { selector: { "app.kubernetes.io/name": "redis" }, ports: [{ name: "redis", port: 6379 }] },
    },
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: {
        name: "governance-api",
        namespace: demo,
        labels: { "app.kubernetes.io/name": "governance-api", "app.kubernetes.io/part-of": "governance" },
      },
      spec: {
        replicas: 3,
        selector: { matchLabels: { "app.kubernetes.io/name": "governance-api" } },
        template: {
          metadata: {
            labels: { "app.kubernetes.io/name": "governance-api", "app.kubernetes.io/part-of": "governance" },
          },
          spec: {
            containers: [
              {
                name: "api",
                image: images.APP_IMAGE,
                imagePullPolicy: "Never",
                env: [
                  { name: "DB_HOST", value: `postgres.${demo}.svc.cluster.local` },
                  { name: "DB_NAME", value: "governance" },
                  secretEnv("DB_USER", "app-db", "username"),
                  secretEnv("DB_PASSWORD", "app-db", "password"),
                ],
              },
            ],
          },
        },
      },
    },
  ];
  return docs.map((d) => dump(d)).join("---\n");
}

function secret(name: string, data: Record<string, string>): object {
  return { apiVersion: "v1", kind: "Secret", metadata: { name, namespace: demo }, stringData: data };
}

function secretEnv(name: string, secretName: string, key: string): object {
  return { name, valueFrom: { secretKeyRef: { name: secretName, key } } };
}

/** examples/poolpolicy.yaml, with the reaper's timings shortened so the test sees it act. */
function examplePolicy(): string {
  const policy = load(readFileSync(join(repoRoot, "examples/poolpolicy.yaml"), "utf8")) as {
    spec: { reaper: { interval: string; idleInTransactionTimeout: string } };
  };
  policy.spec.reaper.interval = "5s";
  policy.spec.reaper.idleInTransactionTimeout = "10s";
  return dump(policy);
}
