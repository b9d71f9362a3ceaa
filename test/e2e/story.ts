/**
 * The steps of the user's story on a real node, shared by the test that asserts it
 * (story.test.ts, `make e2e`) and the demo that shows it (demo.ts, `make demo` with Docker):
 * build the node and the images, bring the node up joined to the harness's control plane, deploy
 * PostgreSQL and the apps, install the chart, apply the example policy, wait for convergence,
 * and tear it all down. The steps check nothing beyond "it happened"; the test asserts, the
 * demo prints.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  AppsV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  KubeConfig,
  type V1Pod,
  type V1ResourceAttributes,
} from "@kubernetes/client-node";
import { dump, load } from "js-yaml";
import { POOLER_AUTH_FILE } from "../../src/pooler/pooler-objects.js";
import { ControlPlane } from "../harness/controlplane.js";
import { waitFor } from "../harness/processes.js";
import { repoRoot, toolPath } from "../harness/tools.js";
import { type NodeComponent, type NodeEnv, nodeEnv, nodeIdentities, parseEnv, RealNode } from "./node.js";

const run = promisify(execFile);
export const demoNs = "demo";
export const operatorNs = "poolpolicy-system";
export const release = "poolpolicy-operator";
export const appLabel = "app.kubernetes.io/name=governance-api";
/** The app of the pooled policy, and the PgBouncer the operator runs for it. */
export const pooledLabel = "app.kubernetes.io/name=pooled-api";
export const poolerLabel = "pooling.dbops.io/pooler=pgbouncer";
export const poolerPort = 6432;
/** PostgreSQL's two refusals when no slot is left (the second for ordinary roles while reserved slots remain). */
export const refusal = /sorry, too many clients already|remaining connection slots are reserved/;

/** kubectl with the given kubeconfig; returns stdout, throws with stderr. */
async function kubectlWith(kubeconfig: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await run(toolPath("kubectl"), [`--kubeconfig=${kubeconfig}`, ...args], {
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`kubectl ${args.join(" ")} failed: ${e.stderr || e.message}`);
  }
}

/** The builds prepare() runs: stop() ends them (a SIGTERM to the demo must not leave a build running). */
const preparing = new Set<ChildProcess>();

/** Runs a command with its output on ours (a cold build takes minutes: the user sees it move). */
async function runVisibly(command: string, args: string[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn(command, args, { stdio: "inherit" });
    preparing.add(child);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      preparing.delete(child);
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(" ")} failed (${signal ?? `exit ${code}`})`));
    });
  });
}

/** A control plane and a real node, with the images of the story loaded into the node. */
export class RealCluster {
  readonly env: NodeEnv = nodeEnv();
  readonly controlPlane: ControlPlane;
  /** NAME_IMAGE / NAME_TAR of tools/e2e/images.sh, once prepare() ran. */
  images: Record<string, string> = {};
  kc!: KubeConfig;
  core!: CoreV1Api;
  apps!: AppsV1Api;
  private node: RealNode | undefined;
  /** The node's daemons' tokens: in the control plane's token file from its start. */
  private readonly nodeIdentities = nodeIdentities();
  private readonly pgPassword = randomBytes(12).toString("hex");
  private readonly appPassword = randomBytes(12).toString("hex");

  /** `dir`: a temp folder of the caller's, for the control plane, the node's logs and images.env. */
  constructor(private readonly dir: string) {
    this.controlPlane = new ControlPlane({
      dir: join(dir, "cp"),
      address: this.env.NODE_HOST_IP,
      serviceClusterIpRange: this.env.NODE_SERVICE_CIDR,
      fakeNode: false,
      users: Object.values(this.nodeIdentities),
    });
  }

  get kubeconfigPath(): string {
    return this.controlPlane.kubeconfigPath;
  }

  /** kubelet, kube-proxy and CoreDNS, then the images: both cached, so a warm run builds nothing. */
  async prepare(): Promise<void> {
    await runVisibly("bash", [join(repoRoot, "tools/build-node.sh")]);
    const imagesEnv = join(this.dir, "images.env");
    await runVisibly("bash", [join(repoRoot, "tools/e2e/images.sh"), imagesEnv]);
    this.images = parseEnv(readFileSync(imagesEnv, "utf8"));
  }

  /** The node's namespace, the control plane on its link, then containerd, kubelet, kube-proxy, CoreDNS. */
  async start(): Promise<void> {
    const { stdout: binDir } = await run("bash", [join(repoRoot, "tools/build-node.sh"), "--print-dir"]);
    this.node = new RealNode({
      binDir: binDir.trim(),
      imageTars: ["PAUSE", "OPERATOR", "POSTGRES", "REDIS", "APP", "PGBOUNCER"].map((n) => this.images[`${n}_TAR`]!),
      pauseImage: this.images.PAUSE_IMAGE!,
      dir: join(this.dir, "node"),
      identities: this.nodeIdentities,
    });
    this.node.up();
    await this.controlPlane.start();
    this.node.connect(this.controlPlane.server);
    this.kc = this.controlPlane.kubeConfig();
    this.core = this.kc.makeApiClient(CoreV1Api);
    this.apps = this.kc.makeApiClient(AppsV1Api);
    await this.node.start(this.kc);
  }

  /** Throws when a daemon of the node has exited, naming its log. */
  assertNodeRunning(): void {
    this.node?.assertRunning();
  }

  /**
   * Namespaces first, so that kubelet stops the pods itself (CNI DEL, sandboxes removed); then
   * the node's teardown removes whatever is left, also after a failure half-way or a Ctrl-C that
   * reached the node's daemons too (then no kubelet is left to stop the pods: skip to the teardown).
   * Never throws.
   */
  async stop(): Promise<void> {
    for (const child of preparing) child.kill("SIGTERM");
    if (this.nodeAlive() && this.core) {
      for (const ns of [demoNs, operatorNs]) await this.core.deleteNamespace({ name: ns }).catch(() => undefined);
      await waitFor(
        "the story's pods to be gone",
        async () => !this.nodeAlive() || (await this.core.listPodForAllNamespaces()).items.length === 0,
        { timeoutMs: 90_000, intervalMs: 1_000 },
      ).catch((err: Error) => console.error(`cleanup: ${err.message}; the node's teardown removes them`));
    }
    await this.node?.stop();
    await this.controlPlane.stop().catch((err: Error) => console.error(`cleanup: ${err.message}`));
  }

  private nodeAlive(): boolean {
    try {
      this.node?.assertRunning();
      return this.node !== undefined;
    } catch {
      return false;
    }
  }

  /** kubectl against the control plane, as the admin; returns stdout, throws with stderr. */
  async kubectl(...args: string[]): Promise<string> {
    return kubectlWith(this.kubeconfigPath, args);
  }

  /** kubectl with the kubeconfig (and so the identity) of one of the node's daemons. */
  async kubectlAs(component: NodeComponent, ...args: string[]): Promise<string> {
    if (!this.node) throw new Error(`kubectl as ${component}: the node has not started`);
    return kubectlWith(this.node.kubeconfigOf(component), args);
  }

  /**
   * Whether one of the node's daemons may do `attributes`: a SelfSubjectAccessReview made with its
   * own credentials, decided by the API server's authorizers (Node, then RBAC) as its requests are.
   */
  async allowed(component: NodeComponent, attributes: V1ResourceAttributes): Promise<boolean> {
    if (!this.node) throw new Error(`an access review as ${component}: the node has not started`);
    const kc = new KubeConfig();
    kc.loadFromFile(this.node.kubeconfigOf(component));
    const review = await kc
      .makeApiClient(AuthorizationV1Api)
      .createSelfSubjectAccessReview({ body: { spec: { resourceAttributes: attributes } } });
    return review.status?.allowed ?? false;
  }

  async kubectlApply(manifest: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const child = spawn(toolPath("kubectl"), [`--kubeconfig=${this.kubeconfigPath}`, "apply", "-f", "-"]);
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`kubectl apply failed: ${stderr}`))));
      child.stdin.end(manifest);
    });
  }

  /** psql in the PostgreSQL pod, as the admin over the local socket; the result as text. */
  async psql(sql: string): Promise<string> {
    return (
      await this.kubectl(
        "-n",
        demoNs,
        "exec",
        "postgres-0",
        "--",
        "psql",
        "-U",
        "postgres",
        "-d",
        "governance",
        "-tAc",
        sql,
      )
    ).trim();
  }

  /** The Running pods of the story's namespace that `labelSelector` selects and that are not being deleted. */
  async runningPods(labelSelector: string): Promise<V1Pod[]> {
    const list = await this.core.listNamespacedPod({ namespace: demoNs, labelSelector });
    return list.items.filter((p) => !p.metadata?.deletionTimestamp && p.status?.phase === "Running");
  }

  /** The app's Running pods that are not being deleted. */
  async appPods(): Promise<V1Pod[]> {
    return this.runningPods(appLabel);
  }

  async podLog(name: string, sinceSeconds?: number): Promise<string> {
    return this.core.readNamespacedPodLog({ name, namespace: demoNs, sinceSeconds });
  }

  /** Every app pod's log, one after the other. */
  async appLogs(): Promise<string> {
    return (await Promise.all((await this.appPods()).map((p) => this.podLog(p.metadata!.name!)))).join("\n");
  }

  /** PostgreSQL (max_connections 20, data on a persistent volume), Redis and the apps; waits for PostgreSQL. */
  async deployWorkloads(): Promise<void> {
    await this.kubectlApply(this.workloads());
    await waitFor(
      "postgres-0 to be Ready",
      async () => {
        this.assertNodeRunning();
        const pod = await this.core.readNamespacedPod({ name: "postgres-0", namespace: demoNs });
        return pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
      },
      { timeoutMs: 180_000, intervalMs: 1_000 },
    );
  }

  /** Until an app logs PostgreSQL's refusal: three pools of 10 against max_connections 20. */
  async waitForIncident(): Promise<void> {
    // The apps find PostgreSQL by its Service name (CoreDNS) and are refused. (Whether one of
    // them gets its 10 first is a race: asyncpg drops a pool whose first 10 connections did not
    // all open, so three apps retrying together can all keep failing.)
    await waitFor("an app to log PostgreSQL's refusal", async () => refusal.test(await this.appLogs()), {
      timeoutMs: 180_000,
      intervalMs: 2_000,
    });
  }

  /** The chart's `helm install` into a namespace enforcing "restricted" (tools/e2e/install-operator.sh): its output. */
  async installOperator(): Promise<string> {
    const image = this.images.OPERATOR_IMAGE!;
    const colon = image.lastIndexOf(":");
    const args = [join(repoRoot, "tools/e2e/install-operator.sh"), image.slice(0, colon), image.slice(colon + 1)];
    try {
      const { stdout } = await run("bash", args, {
        env: {
          ...process.env,
          KUBECONFIG: this.kubeconfigPath,
          KUBECTL: toolPath("kubectl"),
          HELM: toolPath("helm"),
          OPERATOR_NAMESPACE: operatorNs,
          RELEASE: release,
        },
      });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`install-operator.sh failed: ${e.stderr || e.message}`);
    }
  }

  /** Until the operator's log says it leads (it acts only then). */
  async waitForOperatorLeader(): Promise<void> {
    const [pod] = (await this.core.listNamespacedPod({ namespace: operatorNs })).items;
    await waitFor(
      "the operator to become leader",
      async () => (await this.kubectl("-n", operatorNs, "logs", pod!.metadata!.name!)).includes("became leader"),
      { timeoutMs: 60_000, intervalMs: 1_000 },
    );
  }

  /** `helm upgrade` with pooler.enabled=true: the operator may now run the PgBouncer a policy declares. */
  async enablePooler(): Promise<void> {
    const chart = join(repoRoot, "charts/poolpolicy-operator");
    const args = ["upgrade", release, chart, "-n", operatorNs, "--reuse-values", "--set", "pooler.enabled=true"];
    await run(toolPath("helm"), [...args, "--wait", "--timeout=5m"], {
      env: { ...process.env, KUBECONFIG: this.kubeconfigPath },
    });
  }

  /**
   * A second app, pooled-api (2 replicas, its own default address the PostgreSQL Service), and
   * the policy "pooled": its pools of 2 to 4 go through a PgBouncer the policy declares (1 replica,
   * port 6432, the image built here), on the server of the example policy.
   */
  async applyPooledApp(): Promise<void> {
    const example = load(readFileSync(join(repoRoot, "examples/poolpolicy.yaml"), "utf8")) as {
      spec: { postgres: Record<string, unknown> };
    };
    const { maxConnections: _, restart: __, requiredExtensions: ___, ...postgres } = example.spec.postgres;
    const labels = { "app.kubernetes.io/name": "pooled-api", "app.kubernetes.io/part-of": "pooled" };
    const docs = [
      appDeployment("pooled-api", labels, 2, this.images.APP_IMAGE!),
      {
        apiVersion: "pooling.dbops.io/v1alpha1",
        kind: "PoolPolicy",
        metadata: { name: "pooled", namespace: demoNs },
        spec: {
          postgres,
          pool: { minSize: 2, maxSize: 4, via: "Pooler" },
          pooler: { name: "pgbouncer", image: this.images.PGBOUNCER_IMAGE, replicas: 1, port: poolerPort },
          targets: { selector: { matchLabels: { "app.kubernetes.io/part-of": "pooled" } } },
        },
      },
    ];
    await this.kubectlApply(docs.map((d) => dump(d)).join("---\n"));
  }

  /** The PgBouncer pod's settings as it runs them: SHOW CONFIG on its admin console, from inside the pod. */
  async poolerConfig(pod: string): Promise<Record<string, string>> {
    // The admin login is the auth_user's, read from the mounted auth_file in the pod (one line,
    // "user" "password"): the password never leaves the pod.
    const script =
      `set -- $(tr -d '"' < ${POOLER_AUTH_FILE}); ` +
      `PGPASSWORD="$2" exec psql -X -h 127.0.0.1 -p ${poolerPort} -U "$1" -d pgbouncer -tA -F '|' -c 'SHOW CONFIG'`;
    const out = await this.kubectl("-n", demoNs, "exec", pod, "--", "sh", "-c", script);
    return Object.fromEntries(
      out
        .trim()
        .split("\n")
        .map((line) => line.split("|"))
        .map(([key, value]) => [key!, value ?? ""]),
    );
  }

  /** `kubectl apply` of examples/poolpolicy.yaml, with the reaper's timings shortened so one sees it act. */
  async applyExamplePolicy(): Promise<void> {
    const policy = load(readFileSync(join(repoRoot, "examples/poolpolicy.yaml"), "utf8")) as {
      spec: { reaper: { interval: string; idleInTransactionTimeout: string } };
    };
    policy.spec.reaper.interval = "5s";
    policy.spec.reaper.idleInTransactionTimeout = "10s";
    await this.kubectlApply(dump(policy));
  }

  async waitForPolicyReady(): Promise<void> {
    await this.kubectl("-n", demoNs, "wait", "--for=condition=Ready", "pp/governance", "--timeout=300s");
  }

  /** Until the apps rolled out and three pods run with the policy's pool env. */
  async waitForAppsRolled(): Promise<void> {
    await this.kubectl("-n", demoNs, "rollout", "status", "deployment/governance-api", "--timeout=300s");
    await waitFor("three app pods with the policy's env", async () => {
      const pods = await this.appPods();
      return pods.length === 3 && pods.every((p) => envOf(p).DB_POSTGRES_MAX_CONN === "25");
    });
  }

  /** Until each of `pods` logged its open pool. */
  async waitForPools(pods: V1Pod[]): Promise<void> {
    await waitFor(
      "every app pod's pool to be open",
      async () => {
        for (const p of pods) if (!(await this.podLog(p.metadata!.name!)).includes("pool=")) return false;
        return true;
      },
      { timeoutMs: 60_000, intervalMs: 1_000 },
    );
  }

  /** PostgreSQL (hostPath PV under the node's data folder), Redis, and the app Deployment. */
  private workloads(): string {
    const images = this.images;
    const pvPath = join(this.env.NODE_DATA_DIR, "pv", "postgres");
    const docs: object[] = [
      { apiVersion: "v1", kind: "Namespace", metadata: { name: demoNs } },
      secret("pg-admin", { username: "postgres", password: this.pgPassword }),
      secret("app-db", { username: "app", password: this.appPassword }),
      secret("redis", { url: `redis://redis.${demoNs}.svc.cluster.local:6379/0` }),
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
        metadata: { name: "postgres", namespace: demoNs },
        spec: {
          clusterIP: "None",
          selector: { "app.kubernetes.io/name": "postgres" },
          ports: [{ name: "postgres", port: 5432, targetPort: 5432 }],
        },
      },
      {
        apiVersion: "apps/v1",
        kind: "StatefulSet",
        metadata: { name: "postgres", namespace: demoNs },
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
        metadata: { name: "redis", namespace: demoNs },
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
        metadata: { name: "redis", namespace: demoNs },
        spec: { selector: { "app.kubernetes.io/name": "redis" }, ports: [{ name: "redis", port: 6379 }] },
      },
      appDeployment(
        "governance-api",
        { "app.kubernetes.io/name": "governance-api", "app.kubernetes.io/part-of": "governance" },
        3,
        images.APP_IMAGE!,
      ),
    ];
    return docs.map((d) => dump(d)).join("---\n");
  }
}

/** An app Deployment of the incident's Python service, with its own default address: the PostgreSQL Service. */
function appDeployment(name: string, labels: Record<string, string>, replicas: number, image: string): object {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace: demoNs, labels },
    spec: {
      replicas,
      selector: { matchLabels: { "app.kubernetes.io/name": labels["app.kubernetes.io/name"] } },
      template: {
        metadata: { labels },
        spec: {
          containers: [
            {
              name: "api",
              image,
              imagePullPolicy: "Never",
              env: [
                { name: "DB_HOST", value: `postgres.${demoNs}.svc.cluster.local` },
                { name: "DB_NAME", value: "governance" },
                secretEnv("DB_USER", "app-db", "username"),
                secretEnv("DB_PASSWORD", "app-db", "password"),
              ],
            },
          ],
        },
      },
    },
  };
}

/** The first container's env of a pod or pod template, as name → value. */
export function envOf(pod: {
  spec?: { containers: { env?: { name: string; value?: string }[] }[] };
}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of pod.spec?.containers[0]?.env ?? []) out[e.name] = e.value ?? "";
  return out;
}

function secret(name: string, data: Record<string, string>): object {
  return { apiVersion: "v1", kind: "Secret", metadata: { name, namespace: demoNs }, stringData: data };
}

function secretEnv(name: string, secretName: string, key: string): object {
  return { name, valueFrom: { secretKeyRef: { name: secretName, key } } };
}

/** Why the story cannot run on real pods here (root, Docker, a node in use), or undefined when it can. */
export function realPodsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "a real node needs root (network namespaces, mounts, containerd)";
  // There is one node per machine (fixed addresses and folders), and bringing it up tears down the old one.
  if (spawnSync("bash", [join(repoRoot, "tools/e2e/node.sh"), "busy"], { stdio: "ignore" }).status === 0) {
    return "the real node is in use (a `make e2e` or another `make demo` runs; `make e2e-clean` if not)";
  }
  const docker = spawnSync("bash", [join(repoRoot, "tools/e2e/docker.sh"), "usable"], { stdio: "ignore" });
  if (docker.status !== 0) return "no Docker here (`docker info` does not answer and there is no dockerd on PATH)";
  return undefined;
}
