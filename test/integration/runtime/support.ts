/**
 * What the runtime's integration tests share: a ConfigMap informer that records what its
 * handlers saw, a quiet logger, and a relay that can cut the line to the API server.
 */
import { createServer, connect, type AddressInfo, type Server, type Socket } from "node:net";
import { CoreV1Api, KubeConfig, type V1ConfigMap } from "@kubernetes/client-node";
import { pino } from "pino";
import { ResilientInformer, type InformerOptions } from "../../../src/runtime/informer.js";
import { abortableRequest } from "../../../src/runtime/request-options.js";

/** Silent unless LOG_LEVEL asks: the runtime logs every restart, noise in a passing run. */
export const quietLogger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

export interface Seen {
  added: string[];
  updated: string[];
  deleted: string[];
  resynced: string[];
  /** The resourceVersion each list asked for ("0": the API server's cache; undefined: a consistent read). */
  listedAt: Array<string | undefined>;
}

export const testLabel = { "runtime-test": "yes" };

/** An informer of the ConfigMaps labelled `testLabel` in `namespace`, recording handler calls by name. */
export function configMapInformer(
  kc: KubeConfig,
  namespace: string,
  options: InformerOptions<V1ConfigMap> = {},
): { informer: ResilientInformer<V1ConfigMap>; seen: Seen } {
  const core = kc.makeApiClient(CoreV1Api);
  const seen: Seen = { added: [], updated: [], deleted: [], resynced: [], listedAt: [] };
  const labelSelector = "runtime-test=yes";
  const informer = new ResilientInformer<V1ConfigMap>(
    kc,
    `/api/v1/namespaces/${namespace}/configmaps`,
    ({ labelSelector, resourceVersion, signal }) => {
      seen.listedAt.push(resourceVersion);
      return core.listNamespacedConfigMap({ namespace, labelSelector, resourceVersion }, abortableRequest(signal));
    },
    {
      labelSelector,
      logger: quietLogger,
      onAdd: (cm) => void seen.added.push(cm.metadata!.name!),
      onUpdate: (_old, cm) => void seen.updated.push(cm.metadata!.name!),
      onDelete: (cm) => void seen.deleted.push(cm.metadata!.name!),
      ...options,
    },
  );
  return { informer, seen };
}

export function createConfigMap(kc: KubeConfig, namespace: string, name: string, data: Record<string, string> = {}) {
  return kc
    .makeApiClient(CoreV1Api)
    .createNamespacedConfigMap({ namespace, body: { metadata: { name, labels: testLabel }, data } });
}

/**
 * A TCP relay in front of the kube-apiserver that the test can turn into a black hole:
 * connections are accepted and then nothing comes back, like a network partition or a
 * half-open connection. This is fault injection on the wire, not a fake API server: while
 * open, every byte goes to the real one.
 */
export class BlackHoleRelay {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private blackHole = false;

  private constructor(private readonly target: { host: string; port: number }) {
    this.server = createServer((client) => this.relay(client));
  }

  static async start(kc: KubeConfig): Promise<{ relay: BlackHoleRelay; kubeConfig: KubeConfig }> {
    const upstream = new URL(kc.getCurrentCluster()!.server);
    const relay = new BlackHoleRelay({ host: upstream.hostname, port: Number(upstream.port) });
    await new Promise<void>((resolve) => relay.server.listen(0, "127.0.0.1", resolve));
    const port = (relay.server.address() as AddressInfo).port;
    return { relay, kubeConfig: withServer(kc, `https://127.0.0.1:${port}`) };
  }

  /** From now on nothing gets through; connections already open go silent too. */
  swallowEverything(): void {
    this.blackHole = true;
    for (const socket of this.sockets) socket.unpipe();
  }

  /** New connections get through again; the ones swallowed stay silent, as half-open ones do. */
  restore(): void {
    this.blackHole = false;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private relay(client: Socket): void {
    this.track(client);
    if (this.blackHole) return; // accepted, never answered
    const upstream = connect(this.target.port, this.target.host);
    this.track(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("close", closeBoth);
    upstream.on("close", closeBoth);
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.on("error", () => undefined);
    socket.on("close", () => this.sockets.delete(socket));
  }
}

/** A copy of `kc` that talks to `server` instead. */
function withServer(kc: KubeConfig, server: string): KubeConfig {
  const cluster = kc.getCurrentCluster()!;
  const copy = new KubeConfig();
  copy.loadFromOptions({
    clusters: [{ ...cluster, server }],
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  return copy;
}
