/**
 * The fan-out baseline: a minimal client, in a process of its own like the operator, that sends
 * the same server-side apply patches the operator sends (same body, `force`, a field manager of
 * its own) to Deployments `${PREFIX}-0 … ${PREFIX}-${COUNT-1}`, CONCURRENCY at a time, and
 * nothing else: no list, no watch, no status, no Events.
 *
 * CLIENT=raw (the raw limit): node:https with one kept-alive connection per request in flight.
 * CLIENT=client-node: @kubernetes/client-node's typed API as shipped (a new connection per request).
 *
 * Protocol: prints "ready" once connected, waits for a line "go" on stdin, sends the patches,
 * prints one JSON line {"ms": …, "failed": …}, exits.
 */
import { Agent, request } from "node:https";
import { createInterface } from "node:readline";
import { AppsV1Api, KubeConfig, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { injectionApplyConfig } from "../../src/controller/env-injection.js";
import { mapLimit } from "./stats.js";

const env = process.env;
const namespace = env.NAMESPACE!;
const prefix = env.PREFIX!;
const count = Number(env.COUNT);
const concurrency = Number(env.CONCURRENCY ?? "1");
const mode = env.CLIENT ?? "raw";
const values = [
  { name: "DB_POSTGRES_MIN_CONN", value: env.MIN_CONN ?? "5" },
  { name: "DB_POSTGRES_MAX_CONN", value: env.MAX_CONN ?? "25" },
];

const kc = new KubeConfig();
kc.loadFromDefault();
const names = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
const bodies = names.map((name) => injectionApplyConfig({ metadata: { name, namespace } }, ["app"], values));
const fieldManager = "bench-baseline";

let patch: (i: number) => Promise<void>;
if (mode === "client-node") {
  const apps = kc.makeApiClient(AppsV1Api);
  const ssa = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);
  patch = async (i) => {
    await apps.patchNamespacedDeployment(
      { name: names[i]!, namespace, body: bodies[i]!, fieldManager, force: true },
      ssa,
    );
  };
  // One request first, as the operator has talked to the API server before it patches.
  await apps.readNamespacedDeployment({ name: names[0]!, namespace });
} else {
  const server = new URL(kc.getCurrentCluster()!.server);
  const token = kc.getCurrentUser()!.token!;
  const agent = new Agent({ keepAlive: true, rejectUnauthorized: false, maxSockets: concurrency });
  const send = (method: string, path: string, body?: string, contentType?: string) =>
    new Promise<void>((resolve, reject) => {
      const req = request(
        {
          host: server.hostname,
          port: server.port,
          method,
          path,
          agent,
          headers: {
            Authorization: `Bearer ${token}`,
            Accept: "application/json",
            ...(contentType ? { "Content-Type": contentType } : {}),
          },
        },
        (res) => {
          res.resume();
          res.on("end", () =>
            (res.statusCode ?? 500) < 300 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`)),
          );
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  const base = `/apis/apps/v1/namespaces/${namespace}/deployments`;
  patch = (i) =>
    send(
      "PATCH",
      `${base}/${names[i]}?fieldManager=${fieldManager}&force=true`,
      JSON.stringify(bodies[i]),
      "application/apply-patch+yaml",
    );
  // Open the connections, as the operator's are open before it patches.
  await Promise.all(Array.from({ length: concurrency }, () => send("GET", `${base}/${names[0]}`)));
}

process.stdout.write("ready\n");
const lines = createInterface({ input: process.stdin });
for await (const line of lines) if (line.trim() === "go") break;
const started = performance.now();
let failed = 0;
await mapLimit(names, concurrency, async (_, i) => {
  try {
    await patch(i);
  } catch {
    failed += 1;
  }
});
process.stdout.write(`${JSON.stringify({ ms: performance.now() - started, failed })}\n`);
process.exit(0);
