/**
 * A KubeConfig whose API clients reuse their connections.
 *
 * Why: @kubernetes/client-node 2.0.1 builds a new undici Agent in applySecurityAuthentication,
 * that is for every request, so every API call opens a new TCP connection and does a full TLS
 * handshake, and the connection is left to idle out. The fan-out benchmark (docs/benchmarks.md)
 * measured what that costs: applying the env to 1,000 Deployments took about twice as long as
 * the same patches on a kept-alive connection. Keeping the first dispatcher built for a given
 * endpoint and set of credentials, and handing it to every later request, gives the generated
 * clients the connection pool they were meant to have.
 *
 * Credentials that can change while the process runs (an exec plugin or auth provider that may
 * hand out a new client certificate) keep the library's behaviour: a fresh dispatcher per
 * request, so a rotated certificate is always used.
 */
import { createHash } from "node:crypto";
import { KubeConfig, type RequestContext } from "@kubernetes/client-node";

type Dispatcher = ReturnType<RequestContext["getDispatcher"]>;

export class ConnectionReusingKubeConfig extends KubeConfig {
  private readonly dispatchers = new Map<string, NonNullable<Dispatcher>>();

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    const key = this.connectionKey();
    const built = context.getDispatcher();
    if (key === undefined || !built) return;
    const shared = this.dispatchers.get(key);
    if (shared) context.setDispatcher(shared);
    else this.dispatchers.set(key, built);
  }

  /** Everything the dispatcher is built from; undefined when that can change between requests. */
  private connectionKey(): string | undefined {
    const cluster = this.getCurrentCluster();
    const user = this.getCurrentUser();
    if (!cluster || user?.exec || user?.authProvider) return undefined;
    const parts = [
      cluster.server,
      cluster.proxyUrl,
      cluster.skipTLSVerify,
      cluster.tlsServerName,
      cluster.caData,
      cluster.caFile,
      user?.name,
      user?.certData,
      user?.certFile,
      user?.keyData,
      user?.keyFile,
    ];
    // Hashed so that the map holds no key material.
    return createHash("sha256").update(JSON.stringify(parts)).digest("hex");
  }
}

/** The kubeconfig kubectl would use (KUBECONFIG, ~/.kube/config, or the in-cluster account). */
export function loadDefaultKubeConfig(): KubeConfig {
  const kc = new ConnectionReusingKubeConfig();
  kc.loadFromDefault();
  return kc;
}
