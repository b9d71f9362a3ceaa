import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiException, AppsV1Api, CoreV1Api, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { ConnectionReusingKubeConfig } from "../../../src/runtime/kube-config.js";

/**
 * The typed clients' requests as they leave the process, through the undici `request` library
 * (src/runtime/undici-http.ts), seen by a plain HTTP server on loopback. (Every integration
 * test sends its API calls the same way to a real kube-apiserver.)
 */
describe("the typed clients on undici's request", () => {
  let server: Server;
  let kc: ConnectionReusingKubeConfig;
  const seen: Array<{ method: string; url: string; headers: IncomingMessage["headers"]; body: string }> = [];
  let connections = 0;

  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk: Buffer) => (body += chunk.toString()));
      req.on("end", () => {
        seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
        if (req.url?.includes("/configmaps/missing")) {
          res.writeHead(404, { "content-type": "application/json" });
          res.end(
            JSON.stringify({
              kind: "Status",
              apiVersion: "v1",
              status: "Failure",
              message: 'configmaps "missing" not found',
              reason: "NotFound",
              code: 404,
            }),
          );
          return;
        }
        if (req.url?.endsWith("/log")) {
          res.writeHead(200, { "content-type": "text/plain" });
          res.end("first line\nsecond line ✓\n");
          return;
        }
        if (req.url?.includes("/deployments/")) {
          res.writeHead(200, [
            ["content-type", "application/json"],
            ["warning", '299 - "first"'],
            ["warning", '299 - "second"'],
          ]);
          res.end(
            JSON.stringify({
              apiVersion: "apps/v1",
              kind: "Deployment",
              metadata: { name: "web", namespace: "ns", generation: 2 },
            }),
          );
          return;
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            apiVersion: "v1",
            kind: "ConfigMap",
            metadata: { name: "settings", namespace: "ns", creationTimestamp: "2026-11-27T05:00:00Z" },
            data: { a: "1" },
          }),
        );
      });
    });
    server.on("connection", () => (connections += 1));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    kc = new ConnectionReusingKubeConfig();
    kc.loadFromOptions({
      clusters: [
        { name: "c", server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true },
      ],
      users: [{ name: "u", token: "secret-token" }],
      contexts: [{ name: "ctx", cluster: "c", user: "u" }],
      currentContext: "ctx",
    });
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it("sends the call with its credentials and reads the typed answer", async () => {
    const configMap = await kc.makeApiClient(CoreV1Api).readNamespacedConfigMap({ name: "settings", namespace: "ns" });
    expect(configMap.data).toEqual({ a: "1" });
    // Deserialized into the library's model: timestamps become Dates.
    expect(configMap.metadata?.creationTimestamp).toBeInstanceOf(Date);
    const request = seen.at(-1)!;
    expect(request.method).toBe("GET");
    expect(request.url).toBe("/api/v1/namespaces/ns/configmaps/settings");
    expect(request.headers.authorization).toBe("Bearer secret-token");
    expect(request.headers["user-agent"]).toBe("poolpolicy-operator");
  });

  it("sends a server-side apply body and content type as given, and joins repeated headers", async () => {
    const apps = kc.makeApiClient(AppsV1Api);
    const body = { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "web", namespace: "ns" } };
    const response = await apps.patchNamespacedDeploymentWithHttpInfo(
      { name: "web", namespace: "ns", body, fieldManager: "test", force: true },
      setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
    );
    expect(response.data.metadata?.generation).toBe(2);
    expect(response.headers.warning).toBe('299 - "first", 299 - "second"');
    const request = seen.at(-1)!;
    expect(request.method).toBe("PATCH");
    expect(request.url).toBe("/apis/apps/v1/namespaces/ns/deployments/web?fieldManager=test&force=true");
    expect(request.headers["content-type"]).toBe("application/apply-patch+yaml");
    expect(JSON.parse(request.body)).toEqual(body);
  });

  it("reads a plain-text answer (a pod's log) as it was sent", async () => {
    const log = await kc.makeApiClient(CoreV1Api).readNamespacedPodLog({ name: "web-0", namespace: "ns" });
    expect(log).toBe("first line\nsecond line ✓\n");
  });

  it("turns an error status into the library's ApiException with the server's message", async () => {
    const failure = await kc
      .makeApiClient(CoreV1Api)
      .readNamespacedConfigMap({ name: "missing", namespace: "ns" })
      .catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(ApiException);
    expect((failure as ApiException<unknown>).code).toBe(404);
    expect(String((failure as ApiException<unknown>).body)).toContain('configmaps \\"missing\\" not found');
  });

  it("keeps one connection for calls one after another", async () => {
    const core = kc.makeApiClient(CoreV1Api);
    const before = connections;
    for (let i = 0; i < 5; i++) await core.readNamespacedConfigMap({ name: "settings", namespace: "ns" });
    expect(connections - before).toBeLessThanOrEqual(1);
  });
});
