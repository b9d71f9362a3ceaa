/**
 * A KubeConfig whose API clients reuse their connections.
 *
 * Why: @kubernetes/client-node 2.0.1 builds a new undici Agent in applySecurityAuthentication,
 * that is for every request, so every API call opens a new TCP connection and does a full TLS
 * handshake, and the connection is left to idle out. The fan-out benchmark (docs/benchmarks.md)
 * measured what that costs: applying the env to 1,000 Deployments took about twice as long as
 * the same patches on a kept-alive connection.
 *
 * So one dispatcher per endpoint and credentials, built once and handed to every later request,
 * on HTTP/1.1: kept-alive connections for requests, one connection per watch. Not HTTP/2 (which
 * undici 8 negotiates by default): on one multiplexed connection, requests waited behind the
 * watch events they cause (fan-out of 1,000 Deployments: 1.41× the raw client on HTTP/2, 1.26×
 * on HTTP/1.1, measured back to back); and with the watches on one shared HTTP/2 connection, a
 * run of fault 3b (the API server frozen past the watchdog) saw the watches end and resume
 * instead of the frozen watch being caught and relisted. One connection per watch keeps each
 * watch's failure its own, as it was before connections were shared.
 *
 * The dispatcher holds the TLS material, read once from the kubeconfig (or the service
 * account's ca.crt in the cluster), as client-go does; the bearer token is a header set on
 * every request, so a refreshed token (the in-cluster token file, OIDC, the other auth
 * providers) is picked up all the same. An exec plugin may hand out a new client certificate,
 * so with one the library's behaviour stays: a fresh dispatcher per request.
 *
 * The typed clients it makes send their requests with undici's `request` (undici-http.ts).
 */
import { createHash } from "node:crypto";
import type { AgentOptions } from "node:https";
import {
  createConfiguration,
  KubeConfig,
  ServerConfiguration,
  type ApiConstructor,
  type ApiType,
  type RequestContext,
} from "@kubernetes/client-node";
import { Agent } from "undici";
import { undiciHttpLibrary } from "./undici-http.js";

const USER_AGENT = "poolpolicy-operator";

type Dispatcher = NonNullable<ReturnType<RequestContext["getDispatcher"]>>;

export class ConnectionReusingKubeConfig extends KubeConfig {
  private readonly dispatchers = new Map<string, Dispatcher>();
  private readonly httpApi = undiciHttpLibrary(USER_AGENT);

  /** As the library's, on our HTTP library. */
  override makeApiClient<T extends ApiType>(apiClientType: ApiConstructor<T>): T {
    const cluster = this.getCurrentCluster();
    if (!cluster) throw new Error("No active cluster!");
    return new apiClientType(
      createConfiguration({
        baseServer: new ServerConfiguration(cluster.server, {}),
        authMethods: { default: this },
        httpApi: this.httpApi,
      }),
    );
  }

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    const key = this.credentialsKey();
    const built = context.getDispatcher();
    if (key === undefined || !built) return;
    let shared = this.dispatchers.get(key);
    if (!shared) {
      shared = (await this.http1Dispatcher()) ?? built;
      this.dispatchers.set(key, shared);
    }
    context.setDispatcher(shared);
  }

  /** The library's dispatcher for this cluster, on HTTP/1.1; undefined for proxies (kept as built). */
  private async http1Dispatcher(): Promise<Dispatcher | undefined> {
    const tls: AgentOptions = {};
    await this.applyToHTTPSOptions(tls);
    const options = this.createDispatcherOptions(this.getCurrentCluster(), {
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      pfx: tls.pfx,
      passphrase: tls.passphrase,
      rejectUnauthorized: tls.rejectUnauthorized,
      servername: tls.servername,
    });
    if (options.type !== "agent") return undefined;
    return new Agent({ connect: options.connect, allowH2: false }) as unknown as Dispatcher;
  }

  /** Everything the dispatchers are built from; undefined when that can change between requests. */
  private credentialsKey(): string | undefined {
    const cluster = this.getCurrentCluster();
    const user = this.getCurrentUser();
    if (!cluster || user?.exec) return undefined;
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
