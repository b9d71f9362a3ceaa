/**
 * A real Kubernetes control plane on loopback, without Docker: etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods become Ready),
 * each a child process of ours on a free port, all state in one temp dir.
 *
 * The controller-manager and scheduler are what make Deployments create ReplicaSets and
 * pods, StatefulSets roll, namespaces finish terminating and garbage get collected; kwok
 * plays the kubelets. See docs/development.md for what was verified and how.
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig, CoreV1Api } from "@kubernetes/client-node";
import { ManagedProcess, waitFor } from "./processes.js";
import { freePort } from "./ports.js";
import { toolPath } from "./tools.js";
import { kwokStagesYaml, kwokNodeName } from "./kwok-stages.js";

export interface ControlPlaneInfo {
  /** Admin kubeconfig (system:masters), for tests, kubectl and the demo. */
  kubeconfigPath: string;
  server: string;
  adminToken: string;
  dir: string;
}

export interface ControlPlaneOptions {
  /** Where its files go; default a new temp dir, removed by stop(). */
  dir?: string;
  /**
   * kube-controller-manager's client rate limit (burst twice that). Unset: its default of 20/s,
   * burst 30, which settles about 5 Deployments a second: enough for tests, not for thousands.
   */
  controllerManagerQps?: number;
  /**
   * The address the kube-apiserver listens on and advertises (the `kubernetes` Service's
   * endpoint). Default 127.0.0.1; a real node's pods need an address they can route to.
   */
  address?: string;
  /** The Service ClusterIP range. Default 10.0.0.0/24. */
  serviceClusterIpRange?: string;
  /** kwok and its fake node, whose pods become Ready without running. Default true. */
  fakeNode?: boolean;
  /**
   * More identities in the token file, next to the admin's: a real node's kubelet, kube-proxy
   * and DNS server (test/e2e/node.ts), each with only the rights its identity is given.
   */
  users?: StaticTokenUser[];
}

/** A line of the kube-apiserver's token file: who a bearer token authenticates as. */
export interface StaticTokenUser {
  token: string;
  user: string;
  /** Besides system:authenticated, which every authenticated user has. */
  groups: string[];
}

export class ControlPlane {
  readonly dir: string;
  readonly kubeconfigPath: string;
  private readonly adminToken = randomBytes(24).toString("hex");
  private etcdPort = 0;
  private etcdPeerPort = 0;
  private apiPort = 0;
  private etcd?: ManagedProcess;
  private apiServer?: ManagedProcess;
  private controllerManager?: ManagedProcess;
  private scheduler?: ManagedProcess;
  private kwok?: ManagedProcess;

  constructor(private readonly options: ControlPlaneOptions = {}) {
    this.dir = options.dir ?? mkdtempSync(join(tmpdir(), "poolpolicy-cp-"));
    this.kubeconfigPath = join(this.dir, "kubeconfig");
  }

  get address(): string {
    return this.options.address ?? "127.0.0.1";
  }

  get server(): string {
    return `https://${this.address}:${this.apiPort}`;
  }

  info(): ControlPlaneInfo {
    return { kubeconfigPath: this.kubeconfigPath, server: this.server, adminToken: this.adminToken, dir: this.dir };
  }

  /**
   * GET `path` from the kube-apiserver with the admin token, the body as the server sent it
   * (its /metrics text, or JSON left unparsed by any client library).
   */
  adminGet(path: string, timeoutMs = 30_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: this.address,
          port: this.apiPort,
          path,
          rejectUnauthorized: false,
          headers: { Authorization: `Bearer ${this.adminToken}` },
          timeout: timeoutMs,
        },
        (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => (body += chunk));
          res.on("end", () =>
            res.statusCode === 200
              ? resolve(body)
              : reject(new Error(`kube-apiserver ${path} answered ${res.statusCode}`)),
          );
        },
      );
      req.on("error", reject);
      req.on("timeout", () => req.destroy(new Error(`kube-apiserver ${path} timed out`)));
      req.end();
    });
  }

  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromFile(this.kubeconfigPath);
    return kc;
  }

  async start(): Promise<void> {
    mkdirSync(join(this.dir, "logs"), { recursive: true });
    this.etcdPort = await freePort();
    this.etcdPeerPort = await freePort();
    this.apiPort = await freePort();
    this.writeCredentials();
    this.startEtcd();
    await this.startApiServer();
    this.controllerManager = this.spawn("kube-controller-manager", [
      `--kubeconfig=${this.kubeconfigPath}`,
      "--leader-elect=false",
      "--secure-port=0",
      `--service-account-private-key-file=${join(this.dir, "sa.key")}`,
      "--use-service-account-credentials=false",
      // Published in every namespace as kube-root-ca.crt: what pods verify the API server with.
      `--root-ca-file=${join(this.dir, "pki", "apiserver.crt")}`,
      // Namespaces are created and deleted per test: finish their deletion quickly.
      "--concurrent-namespace-syncs=5",
      ...(this.options.controllerManagerQps
        ? [
            `--kube-api-qps=${this.options.controllerManagerQps}`,
            `--kube-api-burst=${this.options.controllerManagerQps * 2}`,
          ]
        : []),
    ]);
    this.scheduler = this.spawn("kube-scheduler", [
      `--kubeconfig=${this.kubeconfigPath}`,
      "--leader-elect=false",
      "--secure-port=0",
    ]);
    if (this.options.fakeNode ?? true) {
      writeFileSync(join(this.dir, "kwok-stages.yaml"), kwokStagesYaml);
      this.kwok = this.spawn("kwok", [
        `--kubeconfig=${this.kubeconfigPath}`,
        `--config=${join(this.dir, "kwok-stages.yaml")}`,
        "--manage-all-nodes=true",
        "--node-lease-duration-seconds=40",
        "--cidr=10.244.0.0/16",
      ]);
      await this.createFakeNode();
    }
    await this.waitForDefaultServiceAccount();
  }

  /** Stops the kube-apiserver (etcd keeps every object), e.g. to test that watches recover. */
  async stopApiServer(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    await this.apiServer?.stop(signal);
  }

  /** Freezes or thaws the kube-apiserver process (SIGSTOP / SIGCONT): a silent, half-open server. */
  freezeApiServer(frozen: boolean): void {
    this.apiServer?.signal(frozen ? "SIGSTOP" : "SIGCONT");
  }

  /** Starts the kube-apiserver on the same port and etcd, and waits until it is ready. */
  async startApiServer(): Promise<void> {
    const pki = join(this.dir, "pki");
    mkdirSync(pki, { recursive: true });
    this.apiServer = this.spawn("kube-apiserver", [
      `--etcd-servers=http://127.0.0.1:${this.etcdPort}`,
      `--cert-dir=${pki}`,
      `--secure-port=${this.apiPort}`,
      `--bind-address=${this.address}`,
      // Without it, a host with no default route makes the apiserver refuse to start.
      `--advertise-address=${this.address}`,
      `--service-cluster-ip-range=${this.options.serviceClusterIpRange ?? "10.0.0.0/24"}`,
      "--allow-privileged=true",
      // kubectl logs/exec reach a real kubelet at its node's InternalIP; its Hostname (tried
      // first by default) resolves nowhere here.
      "--kubelet-preferred-address-types=InternalIP,Hostname",
      // As a real cluster authorizes its kubelets: the Node authorizer lets a kubelet
      // (system:node:<name> in system:nodes) read only what the pods bound to it use, RBAC the
      // rest; NodeRestriction lets it write only its own Node and those pods. Both apply to node
      // identities only: tests, kwok and the operator are unaffected.
      "--authorization-mode=Node,RBAC",
      "--enable-admission-plugins=NodeRestriction",
      `--service-account-issuer=https://127.0.0.1:${this.apiPort}/`,
      `--service-account-key-file=${join(this.dir, "sa.key")}`,
      `--service-account-signing-key-file=${join(this.dir, "sa.key")}`,
      `--token-auth-file=${join(this.dir, "tokens.csv")}`,
      // Events are read by tests right after they are written; keep them an hour.
      "--event-ttl=1h",
    ]);
    await waitFor("kube-apiserver /readyz", () => this.isReady(), { timeoutMs: 90_000, intervalMs: 250 }).catch(
      (err: Error) => {
        throw new Error(`${err.message} (log: ${this.apiServer?.logFile})`);
      },
    );
  }

  async stop(): Promise<void> {
    for (const p of [this.kwok, this.scheduler, this.controllerManager, this.apiServer, this.etcd]) {
      await p?.stop("SIGTERM", 5_000);
    }
    if (!process.env.POOLPOLICY_KEEP_TMP) rmSync(this.dir, { recursive: true, force: true });
  }

  private spawn(tool: Parameters<typeof toolPath>[0], args: string[]): ManagedProcess {
    return new ManagedProcess({
      name: tool,
      command: toolPath(tool),
      args,
      logFile: join(this.dir, "logs", `${tool}.log`),
    });
  }

  private startEtcd(): void {
    const peer = `http://127.0.0.1:${this.etcdPeerPort}`;
    this.etcd = this.spawn("etcd", [
      `--data-dir=${join(this.dir, "etcd")}`,
      `--listen-client-urls=http://127.0.0.1:${this.etcdPort}`,
      `--advertise-client-urls=http://127.0.0.1:${this.etcdPort}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=default=${peer}`,
      // Test data is disposable; fsync would make every write wait for the disk.
      "--unsafe-no-fsync=true",
      "--log-level=warn",
    ]);
  }

  private writeCredentials(): void {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    writeFileSync(join(this.dir, "sa.key"), privateKey.export({ type: "pkcs1", format: "pem" }), { mode: 0o600 });
    const users: StaticTokenUser[] = [
      { token: this.adminToken, user: "admin", groups: ["system:masters"] },
      ...(this.options.users ?? []),
    ];
    // token,user,uid[,"group,group"]: the user name serves as its uid.
    const tokens = users.map((u) => [u.token, u.user, u.user, ...(u.groups.length ? [`"${u.groups.join(",")}"`] : [])]);
    writeFileSync(join(this.dir, "tokens.csv"), tokens.map((fields) => `${fields.join(",")}\n`).join(""), {
      mode: 0o600,
    });
    // The serving certificate is self-signed by the apiserver at start; tests on loopback skip its check.
    const kubeconfig = [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: local",
      "  cluster:",
      `    server: ${this.server}`,
      "    insecure-skip-tls-verify: true",
      "users:",
      "- name: admin",
      "  user:",
      `    token: ${this.adminToken}`,
      "contexts:",
      "- name: local",
      "  context: { cluster: local, user: admin }",
      "current-context: local",
      "",
    ].join("\n");
    writeFileSync(this.kubeconfigPath, kubeconfig, { mode: 0o600 });
  }

  private isReady(): Promise<boolean> {
    return new Promise((resolve) => {
      const req = request(
        {
          host: this.address,
          port: this.apiPort,
          path: "/readyz",
          rejectUnauthorized: false,
          headers: { Authorization: `Bearer ${this.adminToken}` },
          timeout: 2_000,
        },
        (res) => {
          res.resume();
          resolve(res.statusCode === 200);
        },
      );
      req.on("error", () => resolve(false));
      req.on("timeout", () => req.destroy());
      req.end();
    });
  }

  private async createFakeNode(): Promise<void> {
    const core = this.kubeConfig().makeApiClient(CoreV1Api);
    await core.createNode({
      body: {
        metadata: {
          name: kwokNodeName,
          labels: { "kubernetes.io/hostname": kwokNodeName, type: "kwok" },
          annotations: { "kwok.x-k8s.io/node": "fake" },
        },
      },
    });
    await waitFor("the kwok node to become Ready", async () => {
      const node = await core.readNode({ name: kwokNodeName });
      const ready = node.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
      return ready && !(node.spec?.taints ?? []).length;
    });
  }

  private async waitForDefaultServiceAccount(): Promise<void> {
    const core = this.kubeConfig().makeApiClient(CoreV1Api);
    await waitFor("the default ServiceAccount (kube-controller-manager is up)", async () => {
      await core.readNamespacedServiceAccount({ name: "default", namespace: "default" });
      return true;
    });
  }
}
