import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { RequestContext } from "@kubernetes/client-node";
import { ConnectionReusingKubeConfig } from "../../../src/runtime/kube-config.js";

function kubeConfig(user: Record<string, unknown>, server = "https://127.0.0.1:6443"): ConnectionReusingKubeConfig {
  const kc = new ConnectionReusingKubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "c", server, caData: Buffer.from("not a real CA").toString("base64"), skipTLSVerify: false }],
    users: [{ name: "u", ...user }],
    contexts: [{ name: "ctx", cluster: "c", user: "u" }],
    currentContext: "ctx",
  });
  return kc;
}

async function dispatcherOf(kc: ConnectionReusingKubeConfig, url = "https://127.0.0.1:6443/api"): Promise<unknown> {
  const context = new RequestContext(url, "GET" as never);
  await kc.applySecurityAuthentication(context);
  return context.getDispatcher();
}

describe("ConnectionReusingKubeConfig", () => {
  it("hands every request the same dispatcher, so connections are kept and reused", async () => {
    const kc = kubeConfig({ token: "t" });
    const first = await dispatcherOf(kc);
    expect(first).toBeDefined();
    expect(await dispatcherOf(kc)).toBe(first);
  });

  it("hands watches the same dispatcher as the other requests", async () => {
    const kc = kubeConfig({ token: "t" });
    const request = await dispatcherOf(kc);
    expect(await dispatcherOf(kc, "https://127.0.0.1:6443/apis/apps/v1/deployments?watch=true&resourceVersion=1")).toBe(
      request,
    );
  });

  it("builds a new dispatcher when the endpoint changes", async () => {
    const kc = kubeConfig({ token: "t" });
    const first = await dispatcherOf(kc);
    kc.loadFromOptions({
      clusters: [
        {
          name: "c",
          server: "https://127.0.0.2:6443",
          caData: Buffer.from("not a real CA").toString("base64"),
          skipTLSVerify: false,
        },
      ],
      users: [{ name: "u", token: "t" }],
      contexts: [{ name: "ctx", cluster: "c", user: "u" }],
      currentContext: "ctx",
    });
    const second = await dispatcherOf(kc);
    expect(second).toBeDefined();
    expect(second).not.toBe(first);
  });

  it("shares the dispatcher in the cluster, where the token file is re-read as a header on every request", async () => {
    const dir = mkdtempSync(join(tmpdir(), "poolpolicy-sa-"));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, "token"), "first-token");
    writeFileSync(join(dir, "ca.crt"), "not a real CA");
    const kc = new ConnectionReusingKubeConfig();
    kc.loadFromClusterAndUser(
      { name: "inCluster", server: "https://10.0.0.1:443", caFile: join(dir, "ca.crt"), skipTLSVerify: false },
      { name: "inClusterUser", authProvider: { name: "tokenFile", config: { tokenFile: join(dir, "token") } } },
    );
    const first = new RequestContext("https://10.0.0.1:443/api", "GET" as never);
    await kc.applySecurityAuthentication(first);
    expect(first.getHeaders().Authorization).toBe("Bearer first-token");
    expect(first.getDispatcher()).toBeDefined();

    // The kubelet rotates the token; the library re-reads the file once its copy is a minute old.
    writeFileSync(join(dir, "token"), "rotated-token");
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + 61_000 });
    try {
      const second = new RequestContext("https://10.0.0.1:443/api", "GET" as never);
      await kc.applySecurityAuthentication(second);
      expect(second.getHeaders().Authorization).toBe("Bearer rotated-token");
      expect(second.getDispatcher()).toBe(first.getDispatcher());
    } finally {
      vi.useRealTimers();
    }
  });

  it("leaves credentials that may rotate (exec plugins) to a fresh dispatcher per request", async () => {
    const credential = JSON.stringify({
      apiVersion: "client.authentication.k8s.io/v1",
      kind: "ExecCredential",
      status: { token: "from-exec" },
    });
    const kc = kubeConfig({
      exec: {
        command: "sh",
        args: ["-c", `echo '${credential}'`],
        apiVersion: "client.authentication.k8s.io/v1",
        interactiveMode: "Never",
      },
    });
    const first = await dispatcherOf(kc);
    const second = await dispatcherOf(kc);
    expect(first).toBeDefined();
    expect(second).toBeDefined();
    expect(second).not.toBe(first);
  });
});
