/**
 * The Postgres pod bridge: the stand-in for a kubelet running the Postgres container.
 *
 * In a real cluster, a StatefulSet pod `postgres-0` runs the database; when a rollout replaces
 * the pod, the kubelet stops the old container (the database shuts down) and starts the new
 * one, and the pod turns Ready only once the database accepts connections again. Our control
 * plane has no kubelet and our PostgreSQL is a local process, so this bridge binds pod ordinal N
 * of one StatefulSet to local PostgresServer N and does that kubelet's work:
 *
 * - pod gone or terminating     → stop the server with a fast shutdown (as SIGINT from a preStop);
 * - a new pod (a new UID) shows → start the server, wait until it accepts connections, then set
 *                                 the pod Running and Ready;
 * - the first pod seen while the server already runs is adopted without a restart.
 *
 * kwok leaves these pods alone because their template carries BRIDGED_POD_LABEL (see
 * kwok-stages.ts). A second ordinal bound to a second server (a streaming replica) needs
 * nothing more than a longer `instances` array.
 */
import { CoreV1Api, type KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { BRIDGED_POD_LABEL } from "./kwok-stages.js";
import type { PostgresServer } from "./postgres.js";

export interface BridgeEvent {
  at: Date;
  pod: string;
  action: "adopted" | "stopped" | "started" | "ready";
  uid?: string;
  /** The pod's controller-revision-hash: which template revision it runs. */
  revision?: string;
}

export class PostgresPodBridge {
  /** What the bridge did, in order: tests assert on it. */
  readonly events: BridgeEvent[] = [];
  private readonly core: CoreV1Api;
  private readonly boundUid = new Map<number, string>();
  /** Pod UIDs a server was started for: a kubelet starts a pod's container once, never twice. */
  private readonly startedFor = new Set<string>();
  private running = false;
  private loop?: Promise<void>;

  constructor(
    kc: KubeConfig,
    private readonly namespace: string,
    private readonly statefulSetName: string,
    /** instances[N] is the server behind pod `${statefulSetName}-N`. */
    private readonly instances: PostgresServer[],
    private readonly pollMs = 200,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
  }

  /** How many times the bridge started a server for a new pod (adoptions excluded). */
  get restarts(): number {
    return this.events.filter((e) => e.action === "started").length;
  }

  /**
   * How many times a pod came up at a new revision of the pod template: the restarts that
   * rollouts (the operator's restart requests) caused. A rollout that is not the operator's
   * (a test patching the template of a StatefulSet whose manifest names no
   * updateStrategy.rollingUpdate) may start the server twice: the StatefulSet controller now and
   * then recreates the pod at the old revision first (workload.ts requestRestart says why, and
   * why the operator's own requests pin partition 0). `restarts` counts both starts, this one.
   */
  get rollouts(): number {
    let count = 0;
    let running: string | undefined;
    for (const e of this.events) {
      if ((e.action !== "started" && e.action !== "adopted") || e.revision === undefined) continue;
      if (running !== undefined && e.revision !== running) count += 1;
      running = e.revision;
    }
    return count;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        try {
          await this.syncOnce();
        } catch {
          // The apiserver may be restarting in a fault test; a kubelet keeps trying too.
        }
        await new Promise((r) => setTimeout(r, this.pollMs));
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async syncOnce(): Promise<void> {
    const pods = await this.core.listNamespacedPod({
      namespace: this.namespace,
      labelSelector: `${BRIDGED_POD_LABEL}=${this.statefulSetName}`,
    });
    for (const [ordinal, server] of this.instances.entries()) {
      const name = `${this.statefulSetName}-${ordinal}`;
      // A pod missing from the list is confirmed with a GET before its database is stopped:
      // a kubelet acts on the pod it knows, not on one absent list.
      const pod = pods.items.find((p) => p.metadata?.name === name) ?? (await this.readPod(name));
      await this.syncInstance(ordinal, name, server, pod);
    }
  }

  private async syncInstance(
    ordinal: number,
    name: string,
    server: PostgresServer,
    pod: V1Pod | undefined,
  ): Promise<void> {
    const bound = this.boundUid.get(ordinal);
    if (!pod || pod.metadata?.deletionTimestamp) {
      if (bound !== undefined) {
        await server.stop("fast");
        this.boundUid.delete(ordinal);
        this.record(name, "stopped", bound);
      }
      return;
    }
    if (!pod.spec?.nodeName) return; // not scheduled yet: no kubelet would run it
    const uid = pod.metadata!.uid!;
    if (uid !== bound) {
      if ((bound === undefined && server.isRunning) || (this.startedFor.has(uid) && server.isRunning)) {
        this.record(name, "adopted", uid, pod);
      } else {
        // Either we saw the old pod disappear (server stopped) or it was replaced between two
        // polls (server still running for the old pod): both end in one fresh start.
        if (server.isRunning) {
          await server.stop("fast");
          this.record(name, "stopped", bound);
        }
        await server.start();
        this.startedFor.add(uid);
        this.record(name, "started", uid, pod);
      }
      this.boundUid.set(ordinal, uid);
    }
    if (!isReady(pod)) {
      await this.markReady(pod, server.host);
      this.record(name, "ready", uid);
    }
  }

  /** The pod's IP is its server's loopback address: the operator reaches each pod there. */
  private async readPod(name: string): Promise<V1Pod | undefined> {
    try {
      return await this.core.readNamespacedPod({ name, namespace: this.namespace });
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
  }

  private async markReady(pod: V1Pod, ip: string): Promise<void> {
    const now = new Date();
    const condition = (type: string) => ({ type, status: "True", lastTransitionTime: now });
    pod.status = {
      ...pod.status,
      phase: "Running",
      hostIP: "127.0.0.1",
      podIP: ip,
      podIPs: [{ ip }],
      startTime: pod.status?.startTime ?? now,
      conditions: ["PodScheduled", "Initialized", "ContainersReady", "Ready"].map(condition),
      containerStatuses: (pod.spec?.containers ?? []).map((c) => ({
        name: c.name,
        image: c.image ?? "postgres",
        imageID: "",
        ready: true,
        started: true,
        restartCount: 0,
        state: { running: { startedAt: now } },
      })),
    };
    await this.core.replaceNamespacedPodStatus({ name: pod.metadata!.name!, namespace: this.namespace, body: pod });
  }

  private record(pod: string, action: BridgeEvent["action"], uid?: string, object?: V1Pod): void {
    this.events.push({
      at: new Date(),
      pod,
      action,
      uid,
      revision: object?.metadata?.labels?.["controller-revision-hash"],
    });
  }
}

function isReady(pod: V1Pod): boolean {
  return pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}
