/**
 * The contract with @kubernetes/client-node's internals that src/runtime/kube-config.ts,
 * src/runtime/undici-http.ts and src/runtime/informer.ts rely on. The version is pinned exactly
 * in package.json; when someone upgrades it, these tests say which assumption no longer holds,
 * instead of the operator silently opening a TLS connection per request again, losing its
 * watches' dispatcher, or having healthy watches cut every 30 s.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import {
  createConfiguration,
  KubeConfig,
  RequestContext,
  ResponseContext,
  SelfDecodingBody,
  ServerConfiguration,
  Watch,
  wrapHttpLibrary,
} from "@kubernetes/client-node";

const require = createRequire(import.meta.url);
const PINNED = "2.0.1";

function kubeConfig(cluster: Record<string, unknown> = {}): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      { name: "c", server: "https://127.0.0.1:6443", caData: Buffer.from("ca").toString("base64"), ...cluster },
    ],
    users: [{ name: "u", token: "t" }],
    contexts: [{ name: "ctx", cluster: "c", user: "u" }],
    currentContext: "ctx",
  });
  return kc;
}

const why = (assumption: string) =>
  `@kubernetes/client-node changed: ${assumption}. Read src/runtime/kube-config.ts, undici-http.ts and informer.ts against the new version before moving the pin.`;

describe(`@kubernetes/client-node ${PINNED}: what the operator relies on`, () => {
  it("is the exact version package.json pins", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
      dependencies: Record<string, string>;
    };
    expect(pkg.dependencies["@kubernetes/client-node"], "pin it exactly, without ^ or ~").toBe(PINNED);
    const installed = JSON.parse(readFileSync(require.resolve("@kubernetes/client-node/package.json"), "utf8")) as {
      version: string;
    };
    expect(installed.version, why("another version is installed")).toBe(PINNED);
  });

  it("KubeConfig still has the methods ConnectionReusingKubeConfig overrides or calls", () => {
    for (const method of [
      "applySecurityAuthentication",
      "applyToHTTPSOptions",
      "createDispatcherOptions",
      "getCurrentCluster",
      "getCurrentUser",
      "makeApiClient",
    ]) {
      expect(
        typeof (KubeConfig.prototype as unknown as Record<string, unknown>)[method],
        why(`KubeConfig.${method}`),
      ).toBe("function");
    }
  });

  it("still builds a new dispatcher for every request (the reason kube-config.ts shares one)", async () => {
    const kc = kubeConfig();
    const dispatcherOf = async () => {
      const context = new RequestContext("https://127.0.0.1:6443/api", "GET" as never);
      await kc.applySecurityAuthentication(context);
      return context.getDispatcher();
    };
    const first = await dispatcherOf();
    expect(first, why("applySecurityAuthentication no longer sets a dispatcher on the RequestContext")).toBeDefined();
    expect(
      await dispatcherOf(),
      why("applySecurityAuthentication now reuses its dispatcher: kube-config.ts's sharing may be unneeded"),
    ).not.toBe(first);
  });

  it("createDispatcherOptions still describes an Agent by its connect options, a proxy, or nothing", () => {
    const kc = kubeConfig();
    const agent = kc.createDispatcherOptions(kc.getCurrentCluster(), { ca: "ca-pem", rejectUnauthorized: true });
    expect(agent, why("createDispatcherOptions' result for a TLS endpoint")).toMatchObject({
      type: "agent",
      connect: { ca: "ca-pem", rejectUnauthorized: true },
    });
    const proxied = kubeConfig({ proxyUrl: "http://proxy:3128" });
    expect(proxied.createDispatcherOptions(proxied.getCurrentCluster(), { ca: "x" }).type).toBe("proxy");
    expect(kc.createDispatcherOptions(kc.getCurrentCluster(), {}).type).toBe("none");
  });

  it("RequestContext still carries the dispatcher, signal, URL, method, headers and body undici-http.ts reads", () => {
    const context = new RequestContext("https://h/api?x=1", "PATCH" as never);
    context.setBody("{}");
    context.setHeaderParam("Content-Type", "application/json");
    const signal = new AbortController().signal;
    context.setSignal(signal);
    const dispatcher = {} as never;
    context.setDispatcher(dispatcher);
    expect(context.getUrl()).toBe("https://h/api?x=1");
    expect(context.getHttpMethod()).toBe("PATCH");
    expect(context.getHeaders()).toMatchObject({ "Content-Type": "application/json" });
    expect(context.getBody()).toBe("{}");
    expect(context.getSignal()).toBe(signal);
    expect(context.getDispatcher()).toBe(dispatcher);
  });

  it("a Configuration still takes our HTTP library, and the response types are built the way undici-http.ts builds them", async () => {
    const httpApi = wrapHttpLibrary({
      send: async () => new ResponseContext(200, {}, new SelfDecodingBody(Promise.resolve(Buffer.from("{}")))),
    });
    const config = createConfiguration({ baseServer: new ServerConfiguration("https://h", {}), httpApi });
    expect(config.httpApi, why("createConfiguration ignores httpApi")).toBe(httpApi);
    const response = new ResponseContext(201, { a: "b" }, {
      text: async () => "t",
      binary: async () => Buffer.from("t"),
    } as never);
    expect(response.httpStatusCode).toBe(201);
    expect(response.headers).toEqual({ a: "b" });
    expect(await response.body.text()).toBe("t");
  });

  it("Watch still has the private 30 s inactivity timer informer.ts lengthens, and sends watches through the KubeConfig's dispatcher", () => {
    const watch = new Watch(kubeConfig()) as unknown as { requestTimeoutMs?: unknown };
    expect(
      watch.requestTimeoutMs,
      why("Watch's private requestTimeoutMs (informer.ts leaveSilenceToOurWatchdog)"),
    ).toBe(30_000);
    const source = Watch.prototype.watch.toString();
    expect(source, why("Watch.watch no longer reads this.requestTimeoutMs")).toContain("this.requestTimeoutMs");
    expect(source, why("Watch.watch no longer asks the KubeConfig for authentication")).toContain(
      "applySecurityAuthentication",
    );
    expect(source, why("Watch.watch no longer uses the dispatcher the KubeConfig sets")).toContain("getDispatcher()");
  });
});
