/**
 * A real Kubernetes node joined to the harness's control plane: Debian's containerd (CRI on,
 * runc, CNI bridge + host-local + portmap), kubelet, kube-proxy (iptables) and CoreDNS
 * (cluster.local only, nothing forwarded), all in the network namespace that
 * tools/e2e/node.sh creates. Pods run for real: images come from the tars of
 * tools/e2e/images.sh, imported into containerd (there is no registry).
 *
 * stop() stops the daemons and runs `node.sh down`, which also removes whatever a crashed run
 * left (containers, shims, mounts, pod network namespaces, cgroups, the namespace with every
 * iptables rule in it). `node.sh up` starts with the same teardown.
 *
 * Each daemon authenticates as itself, with the rights a real cluster gives it, never as the
 * admin: the kubelet as system:node:<name> in system:nodes (the Node authorizer and the
 * NodeRestriction admission plugin of the harness's kube-apiserver), kube-proxy as
 * system:kube-proxy (Kubernetes' default ClusterRoleBinding system:node-proxier), CoreDNS as a
 * user that may only list and watch what it serves (corednsRole below).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CoreV1Api, type KubeConfig, RbacAuthorizationV1Api, type V1PolicyRule } from "@kubernetes/client-node";
import type { StaticTokenUser } from "../harness/controlplane.js";
import { ManagedProcess, waitFor } from "../harness/processes.js";
import { repoRoot } from "../harness/tools.js";

export const nodeName = "poolpolicy-e2e-node";
const nodeScript = join(repoRoot, "tools/e2e/node.sh");

/** The node's daemons that talk to the API server, each with an identity of its own. */
export type NodeComponent = "kubelet" | "kube-proxy" | "coredns";
export type NodeIdentities = Record<NodeComponent, StaticTokenUser>;

/** CoreDNS's user and the ClusterRole (of the same name) that RealNode.start binds it to. */
const corednsUser = "poolpolicy-e2e:coredns";

/**
 * What CoreDNS's kubernetes plugin lists and watches (v1.14: its controller.go), without `pods
 * verified` in the Corefile: nothing else, and no secret of any kind.
 */
const corednsRules: V1PolicyRule[] = [
  { apiGroups: [""], resources: ["services", "namespaces"], verbs: ["list", "watch"] },
  { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
];

/**
 * New tokens for the node's daemons. The control plane must put them in its token file before
 * its kube-apiserver starts (ControlPlaneOptions.users); RealNode writes them into the daemons'
 * kubeconfigs.
 */
export function nodeIdentities(): NodeIdentities {
  const token = () => randomBytes(24).toString("hex");
  return {
    // The Node authorizer recognises a kubelet by this name and group; <name> must be the name
    // the kubelet registers (--hostname-override).
    kubelet: { token: token(), user: `system:node:${nodeName}`, groups: ["system:nodes"] },
    // The subject of Kubernetes' default ClusterRoleBinding system:node-proxier.
    "kube-proxy": { token: token(), user: "system:kube-proxy", groups: [] },
    coredns: { token: token(), user: corednsUser, groups: [] },
  };
}

/** Addresses and folders of the node, as `node.sh env` prints them. */
export interface NodeEnv {
  NODE_NETNS: string;
  NODE_HOST_IP: string;
  NODE_IP: string;
  NODE_POD_CIDR: string;
  NODE_POD_GATEWAY: string;
  NODE_SERVICE_CIDR: string;
  NODE_STATE_DIR: string;
  NODE_DATA_DIR: string;
  NODE_CONTAINERD_SOCK: string;
}

export function nodeEnv(): NodeEnv {
  return parseEnv(execFileSync("bash", [nodeScript, "env"], { encoding: "utf8" })) as unknown as NodeEnv;
}

/** NAME=value lines (node.sh env, images.sh's output) as an object. */
export function parseEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

export interface RealNodeOptions {
  /** Folder of kubelet, kube-proxy and coredns (tools/build-node.sh --print-dir). */
  binDir: string;
  /** Image tars to import into containerd. */
  imageTars: string[];
  /** The sandbox image, as imported (e.g. poolpolicy-e2e/pause:abc). */
  pauseImage: string;
  /** Where logs go. */
  dir: string;
  /** Its daemons' identities (nodeIdentities()), already in the control plane's token file. */
  identities: NodeIdentities;
}

export class RealNode {
  readonly env = nodeEnv();
  private readonly processes: ManagedProcess[] = [];

  /**
   * Config files live in the node's state folder: the daemons' command lines then name it, which
   * is how node.sh down finds them after a crash.
   */
  private readonly configDir = join(this.env.NODE_STATE_DIR, "config");

  constructor(private readonly options: RealNodeOptions) {}

  /** The kubeconfig a daemon of the node uses: its own identity, nobody else's. */
  kubeconfigOf(component: NodeComponent): string {
    return join(this.configDir, `${component}.kubeconfig`);
  }

  /** The cluster DNS server's address, as pods' resolv.conf names it. */
  get dnsAddress(): string {
    return this.env.NODE_IP;
  }

  /**
   * Creates the node's network namespace and link (node.sh up, after removing any leftovers):
   * the host's end of the link is the address the API server must listen on, so this comes
   * before the control plane starts.
   */
  up(): void {
    mkdirSync(join(this.options.dir, "logs"), { recursive: true });
    execFileSync("bash", [nodeScript, "up"], { stdio: "inherit" });
    mkdirSync(this.configDir, { recursive: true });
  }

  /** The API server (its URL on the host's end of the link): one kubeconfig per daemon. */
  connect(server: string): void {
    for (const component of ["kubelet", "kube-proxy", "coredns"] as const) this.writeKubeconfig(server, component);
  }

  async start(kc: KubeConfig): Promise<void> {
    await this.startContainerd();
    this.importImages();
    this.startKubelet();
    await waitFor(
      `node ${nodeName} to be Ready (log: ${this.logFile("kubelet")})`,
      async () => {
        this.assertRunning();
        const node = await kc.makeApiClient(CoreV1Api).readNode({ name: nodeName });
        return node.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
      },
      { timeoutMs: 120_000, intervalMs: 1_000 },
    );
    this.startKubeProxy();
    await this.grantCoreDns(kc);
    this.startCoreDns();
  }

  /** Stops the daemons, then removes everything the node made (node.sh down). Never throws. */
  async stop(): Promise<void> {
    for (const p of [...this.processes].reverse()) await p.stop("SIGTERM", 15_000).catch(() => undefined);
    try {
      execFileSync("bash", [nodeScript, "down"], { stdio: "inherit" });
    } catch (err) {
      console.error(`node.sh down failed: ${(err as Error).message}`);
    }
  }

  logFile(name: string): string {
    return join(this.options.dir, "logs", `${name}.log`);
  }

  /** A crashed daemon fails the wait at once, pointing at its log. */
  assertRunning(): void {
    for (const p of this.processes) {
      if (p.hasExited) throw new Error(`${p.name} exited; see ${p.logFile}`);
    }
  }

  /** Runs a daemon in the node's network namespace (and nothing else: mounts stay the host's). */
  private spawn(name: string, command: string, args: string[]): ManagedProcess {
    const p = new ManagedProcess({
      name,
      command: "nsenter",
      args: [`--net=/var/run/netns/${this.env.NODE_NETNS}`, "--", command, ...args],
      logFile: this.logFile(name),
    });
    this.processes.push(p);
    return p;
  }

  private writeKubeconfig(server: string, component: NodeComponent): void {
    const { user, token } = this.options.identities[component];
    const kubeconfig = [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: local",
      "  cluster:",
      `    server: ${server}`,
      "    insecure-skip-tls-verify: true",
      "users:",
      `- name: "${user}"`,
      "  user:",
      `    token: ${token}`,
      "contexts:",
      "- name: local",
      `  context: { cluster: local, user: "${user}" }`,
      "current-context: local",
      "",
    ].join("\n");
    writeFileSync(this.kubeconfigOf(component), kubeconfig, { mode: 0o600 });
  }

  /** CoreDNS's ClusterRole and its binding, made with the admin's client `kc`. */
  private async grantCoreDns(kc: KubeConfig): Promise<void> {
    const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
    await rbac.createClusterRole({ body: { metadata: { name: corednsUser }, rules: corednsRules } });
    await rbac.createClusterRoleBinding({
      body: {
        metadata: { name: corednsUser },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: corednsUser },
        subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: corednsUser }],
      },
    });
  }

  private async startContainerd(): Promise<void> {
    const { NODE_STATE_DIR: state, NODE_DATA_DIR: data, NODE_CONTAINERD_SOCK: sock } = this.env;
    const cniConfDir = join(data, "cni", "net.d");
    mkdirSync(cniConfDir, { recursive: true });
    writeFileSync(join(cniConfDir, "10-poolpolicy-e2e.conflist"), JSON.stringify(this.cniConfig(), null, 2));
    const config = join(this.configDir, "containerd.toml");
    // containerd 1.6's config format (version 2). Its own root, state and socket, so it never
    // meets the containerd that dockerd runs.
    writeFileSync(
      config,
      [
        "version = 2",
        `root = "${data}/containerd"`,
        `state = "${state}/containerd"`,
        "[grpc]",
        `  address = "${sock}"`,
        '[plugins."io.containerd.internal.v1.opt"]',
        `  path = "${data}/containerd-opt"`,
        '[plugins."io.containerd.grpc.v1.cri"]',
        `  sandbox_image = "docker.io/${this.options.pauseImage}"`,
        // Our machines refuse a lower oom_score_adj than the caller's (runc's -998 for a pod
        // sandbox fails with EACCES): keep every container's at or above containerd's own.
        "  restrict_oom_score_adj = true",
        // Pod network namespaces under the state folder, where node.sh down finds them.
        "  netns_mounts_under_state_dir = true",
        '  [plugins."io.containerd.grpc.v1.cri".containerd]',
        '    snapshotter = "overlayfs"',
        '    default_runtime_name = "runc"',
        '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
        '      runtime_type = "io.containerd.runc.v2"',
        '      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
        // kubelet's cgroupDriver is cgroupfs (no systemd here); both must agree.
        "        SystemdCgroup = false",
        '  [plugins."io.containerd.grpc.v1.cri".cni]',
        '    bin_dir = "/usr/lib/cni"',
        `    conf_dir = "${cniConfDir}"`,
        "",
      ].join("\n"),
    );
    const containerd = this.spawn("containerd", "containerd", ["--config", config]);
    await waitFor(
      `containerd's socket ${sock} (log: ${containerd.logFile})`,
      () => {
        this.assertRunning();
        return existsSync(sock) && this.ctr(["version"]).includes("Server");
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
  }

  private cniConfig(): object {
    return {
      cniVersion: "1.0.0",
      name: "poolpolicy-e2e",
      plugins: [
        {
          type: "bridge",
          bridge: "pp-e2e-br0",
          isGateway: true,
          // Pods talk to the node, to each other and (through kube-proxy's masquerade) to the
          // API server; nothing leaves the node's namespace, so no NAT to the outside.
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: "host-local",
            ranges: [[{ subnet: this.env.NODE_POD_CIDR, gateway: this.env.NODE_POD_GATEWAY }]],
            routes: [{ dst: "0.0.0.0/0" }],
            dataDir: join(this.env.NODE_DATA_DIR, "cni", "ipam"),
          },
        },
        { type: "portmap", capabilities: { portMappings: true } },
      ],
    };
  }

  private ctr(args: string[]): string {
    return execFileSync("ctr", ["--address", this.env.NODE_CONTAINERD_SOCK, "-n", "k8s.io", ...args], {
      encoding: "utf8",
    });
  }

  private importImages(): void {
    for (const tar of this.options.imageTars) this.ctr(["images", "import", tar]);
  }

  private startKubelet(): void {
    const { NODE_DATA_DIR: data, NODE_CONTAINERD_SOCK: sock, NODE_IP: ip } = this.env;
    const config = join(this.configDir, "kubelet.yaml");
    writeFileSync(
      config,
      JSON.stringify(
        {
          apiVersion: "kubelet.config.k8s.io/v1beta1",
          kind: "KubeletConfiguration",
          // Our machines boot in cgroup v1; kubelet 1.35 refuses it unless told (KEP-5573).
          failCgroupV1: false,
          cgroupDriver: "cgroupfs",
          containerRuntimeEndpoint: `unix://${sock}`,
          address: ip,
          readOnlyPort: 0,
          healthzBindAddress: "127.0.0.1",
          // The API server reaches the kubelet (logs, exec) on the node's address only.
          authentication: { anonymous: { enabled: true }, webhook: { enabled: false } },
          authorization: { mode: "AlwaysAllow" },
          clusterDomain: "cluster.local",
          clusterDNS: [this.dnsAddress],
          // Pods get the cluster DNS only: no search path or server of the host.
          resolvConf: "",
          failSwapOn: false,
          // The machine's disk is shared; keep eviction from firing on a busy but healthy disk.
          evictionHard: { "memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%" },
          imageGCHighThresholdPercent: 100,
          imageGCLowThresholdPercent: 99,
          serializeImagePulls: false,
          registerNode: true,
        },
        null,
        2,
      ),
    );
    this.spawn("kubelet", join(this.options.binDir, "kubelet"), [
      `--config=${config}`,
      `--kubeconfig=${this.kubeconfigOf("kubelet")}`,
      `--root-dir=${join(data, "kubelet")}`,
      `--cert-dir=${join(data, "kubelet-pki")}`,
      `--hostname-override=${nodeName}`,
      `--node-ip=${ip}`,
      "--v=1",
    ]);
  }

  private startKubeProxy(): void {
    const config = join(this.configDir, "kube-proxy.yaml");
    writeFileSync(
      config,
      JSON.stringify(
        {
          apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
          kind: "KubeProxyConfiguration",
          clientConnection: { kubeconfig: this.kubeconfigOf("kube-proxy") },
          mode: "iptables",
          hostnameOverride: nodeName,
          bindAddress: this.env.NODE_IP,
          healthzBindAddress: "127.0.0.1:10256",
          metricsBindAddress: "127.0.0.1:10249",
          clusterCIDR: this.env.NODE_POD_CIDR,
          // Service traffic between two pods on the same bridge comes back through the node.
          iptables: { masqueradeAll: true },
          // conntrack's table size and timeouts are host-wide settings: leave the host's alone.
          conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: "0s", tcpCloseWaitTimeout: "0s" },
          nodePortAddresses: [`${this.env.NODE_IP}/32`],
        },
        null,
        2,
      ),
    );
    this.spawn("kube-proxy", join(this.options.binDir, "kube-proxy"), [`--config=${config}`, "--v=1"]);
  }

  private startCoreDns(): void {
    const corefile = join(this.configDir, "Corefile");
    // cluster.local and reverse lookups of pods and Services only; any other name is refused
    // (no forward plugin, nothing leaves the machine).
    writeFileSync(
      corefile,
      [
        `cluster.local:53 in-addr.arpa:53 {`,
        `  bind ${this.dnsAddress}`,
        "  errors",
        `  kubernetes cluster.local in-addr.arpa {`,
        `    kubeconfig ${this.kubeconfigOf("coredns")} local`,
        "    ttl 5",
        "  }",
        "  cache 5",
        "}",
        "",
      ].join("\n"),
    );
    this.spawn("coredns", join(this.options.binDir, "coredns"), ["-conf", corefile]);
  }
}
