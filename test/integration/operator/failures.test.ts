/**
 * What goes wrong around a policy, each reported as a condition with a reason, retried, and
 * recovered from once fixed; and a spec the CRD admits but the operator refuses, applied nowhere.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { KubeConfig } from "@kubernetes/client-node";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { RedisServer } from "../../harness/redis.js";
import { freePort } from "../../harness/ports.js";
import { Scenario } from "./scenario.js";

let kc: KubeConfig;
let operator: OperatorProcess;
const scenarios: Scenario[] = [];
const redisServers: RedisServer[] = [];

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  operator = new OperatorProcess({ kubeconfigPath, logFile: runLogFile(kubeconfigPath, "operator-failures") });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  for (const s of scenarios) await s.cleanup();
  for (const r of redisServers) await r.destroy();
});

async function scenario(): Promise<Scenario> {
  const s = await Scenario.create(kc, { prefix: "fail" });
  scenarios.push(s);
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  return s;
}

const conditionOf = async (s: Scenario, type: string) => (await s.status("p")).conditions?.find((c) => c.type === type);

describe("failures are conditions, and recover", () => {
  it("a missing Secret → SecretNotFound; creating it → Connected", async () => {
    const s = await scenario();
    await s.applyPolicy("p", s.policySpec({ postgres: { credentialsSecret: { name: "not-yet" } } }));
    const p = await s.waitForCondition("p", "PostgresReachable", { status: "False", reason: "SecretNotFound" });
    expect(p.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("False");
    await s.core.createNamespacedSecret({
      namespace: s.namespace,
      body: { metadata: { name: "not-yet" }, stringData: { username: "postgres", password: s.server.password } },
    });
    await s.waitForCondition("p", "PostgresReachable", { status: "True", reason: "Connected" });
  });

  it("a wrong password → AuthenticationFailed, never shown; a rotated Secret → Connected", async () => {
    const s = await scenario();
    const wrong = "wrong-password-0xC0FFEE";
    await s.core.patchNamespacedSecret({
      name: "pg-admin",
      namespace: s.namespace,
      body: [{ op: "replace", path: "/data/password", value: Buffer.from(wrong).toString("base64") }],
    });
    await s.applyPolicy("p", s.policySpec());
    await s.waitForCondition("p", "PostgresReachable", { status: "False", reason: "AuthenticationFailed" });
    await s.core.patchNamespacedSecret({
      name: "pg-admin",
      namespace: s.namespace,
      body: [{ op: "replace", path: "/data/password", value: Buffer.from(s.server.password).toString("base64") }],
    });
    await s.waitForCondition("p", "PostgresReachable", { status: "True" });
    const written = JSON.stringify(await s.status("p")) + JSON.stringify(await s.events()) + operator.logs();
    expect(written).not.toContain(wrong);
    expect(written).not.toContain(s.server.password);
  });

  it("nothing listening → ConnectionRefused; a missing workload → WorkloadNotFound", async () => {
    const s = await scenario();
    await s.applyPolicy("p", s.policySpec({ postgres: { port: await freePort() } }));
    await s.waitForCondition("p", "PostgresReachable", { status: "False", reason: "ConnectionRefused" });

    await s.applyPolicy(
      "q",
      s.policySpec({ postgres: { maxConnections: 90, restart: { workload: { name: "no-such-statefulset" } } } }),
    );
    await s.waitForCondition("q", "MaxConnectionsApplied", { status: "False", reason: "WorkloadNotFound" });
    expect(await s.server.setting("max_connections")).toBe("100");
  });

  it("an invalid spec the CRD admits → InvalidSpec naming the field, and nothing applied", async () => {
    const s = await scenario();
    await s.withPostgresWorkload();
    await s.applyPolicy(
      "p",
      s.policySpec({
        postgres: {
          maxConnections: 150,
          restart: {
            workload: { name: "postgres" },
            maintenanceWindow: { days: ["Sat"], start: "02:00", duration: "2h", timeZone: "Mars/Olympus_Mons" },
          },
        },
      }),
    );
    const p = await s.waitForCondition("p", "Ready", { status: "False", reason: "InvalidSpec" });
    expect(p.status?.conditions?.find((c) => c.type === "Ready")?.message).toContain(
      "spec.postgres.restart.maintenanceWindow.timeZone",
    );
    expect(await s.envOf("api")).toEqual({ LOG_LEVEL: "info" });
    const altered = await s.server.query(
      "SELECT count(*)::int AS n FROM pg_file_settings WHERE name = 'max_connections' AND sourcefile LIKE '%auto.conf'",
    );
    expect(altered[0]!.n).toBe(0);
    expect((await s.events()).some((e) => e.reason === "InvalidSpec" && e.type === "Warning")).toBe(true);
  });

  it("a missing extension → ExtensionMissing with what to do", async () => {
    const s = await scenario();
    // plpgsql is always installed; pgcrypto ships with PostgreSQL but is not created; the third exists nowhere.
    await s.applyPolicy(
      "p",
      s.policySpec({ postgres: { requiredExtensions: ["plpgsql", "pgcrypto", "no_such_ext"] } }),
    );
    const p = await s.waitForCondition("p", "ExtensionsReady", { status: "False", reason: "ExtensionMissing" });
    const message = p.status?.conditions?.find((c) => c.type === "ExtensionsReady")?.message;
    expect(message).toContain("pgcrypto is available but not created (run CREATE EXTENSION pgcrypto in appdb)");
    expect(message).toContain("no_such_ext is not available on the server");
    expect(message).not.toContain("plpgsql");
    await s.server.query("CREATE EXTENSION pgcrypto", [], "appdb");
    await s.patchPolicy("p", { spec: { postgres: { requiredExtensions: ["plpgsql", "pgcrypto"] } } });
    await s.waitForCondition("p", "ExtensionsReady", { status: "True", reason: "Installed" });
  });

  it("Redis down is a warning unless required", async () => {
    const s = await scenario();
    const redis = await RedisServer.create({ password: "redis-pw-123456" });
    redisServers.push(redis);
    await s.core.createNamespacedSecret({
      namespace: s.namespace,
      body: { metadata: { name: "redis" }, stringData: { url: redis.url } },
    });
    await s.applyPolicy("p", s.policySpec({ redis: { urlSecret: { name: "redis" } } }));
    const up = await s.waitForCondition("p", "RedisAvailable", { status: "True", reason: "Available" });
    expect(up.status?.redis).toMatchObject({ maxClients: 10000, rejectedConnections: 0 });
    await s.waitForCondition("p", "Ready", { status: "True" });

    await redis.stop();
    await s.waitForCondition("p", "RedisAvailable", { status: "False", reason: "RedisUnavailable" });
    expect((await conditionOf(s, "Ready"))?.status).toBe("True");

    await s.patchPolicy("p", { spec: { redis: { required: true } } });
    await s.waitForCondition("p", "Ready", { status: "False", reason: "RedisUnavailable" });
    await redis.start();
    await s.waitForCondition("p", "Ready", { status: "True" });
    expect(JSON.stringify(await s.status("p")) + operator.logs()).not.toContain("redis-pw-123456");
  });
});
