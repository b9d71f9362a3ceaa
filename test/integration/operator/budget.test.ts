/**
 * The connection budget and what it drives, against the real parts: demand from pools × pods
 * (HPA maxReplicas and rollout surge included), "auto" sizing, two policies that disagree,
 * the order of restarts and env changes by direction, maintenance windows, and PostgreSQL's
 * own idle_in_transaction_session_timeout as the reaper.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AutoscalingV2Api, PatchStrategy, setHeaderOptions, type KubeConfig } from "@kubernetes/client-node";
import pg from "pg";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";

let kc: KubeConfig;
let operator: OperatorProcess;
const scenarios: Scenario[] = [];
const part = { "app.kubernetes.io/part-of": "shop" };

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  operator = new OperatorProcess({
    kubeconfigPath,
    logFile: runLogFile(kubeconfigPath, "operator-budget"),
    env: { STATS_REFRESH_SECONDS: "120" },
  });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  for (const s of scenarios) await s.cleanup();
});

async function scenario(): Promise<Scenario> {
  const s = await Scenario.create(kc, { prefix: "budget" });
  scenarios.push(s);
  return s;
}

const restartTo = (maxConnections: number | "auto", extra: Record<string, unknown> = {}) => ({
  postgres: { maxConnections, restart: { workload: { name: "postgres" }, ...extra } },
});

describe("the connection budget", () => {
  it("counts pool × worst-case pods (HPA max, surge) plus reserves, and follows HPA and pool changes", async () => {
    const s = await scenario();
    await s.deployment("api", { labels: part, replicas: 2 }); // maxSurge 1
    await s.deployment("worker", { labels: part, replicas: 1 });
    await kc.makeApiClient(AutoscalingV2Api).createNamespacedHorizontalPodAutoscaler({
      namespace: s.namespace,
      body: {
        metadata: { name: "api" },
        spec: {
          scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: "api" },
          minReplicas: 2,
          maxReplicas: 5,
        },
      },
    });
    await s.applyPolicy("p", s.policySpec({ budget: { reserve: 4 } }));
    // api: (5 + 1) × 25 = 150; worker: (1 + 1) × 25 = 50; reserve: 3 superuser + 2 operator + 4 = 9.
    const over = await s.waitForCondition("p", "BudgetWithinLimits", { status: "False", reason: "OverCommitted" });
    expect(over.status?.budget).toMatchObject({ demand: 209, capacity: 100, reserve: 9 });
    expect(over.status?.budget?.targets).toEqual([
      { policy: `${s.namespace}/p`, deployment: `${s.namespace}/api`, poolMax: 25, podsWorstCase: 6, connections: 150 },
      {
        policy: `${s.namespace}/p`,
        deployment: `${s.namespace}/worker`,
        poolMax: 25,
        podsWorstCase: 2,
        connections: 50,
      },
    ]);
    expect(over.status?.conditions?.find((c) => c.type === "BudgetWithinLimits")?.message).toContain(
      "raise max_connections to at least 209",
    );
    // Events are written right after the status: wait for it rather than race it.
    await waitFor("a Warning Event about the budget", async () =>
      (await s.events()).some((e) => e.reason === "OverCommitted" && e.type === "Warning"),
    );
    expect(over.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("False");

    await kc
      .makeApiClient(AutoscalingV2Api)
      .patchNamespacedHorizontalPodAutoscaler(
        { name: "api", namespace: s.namespace, body: { spec: { maxReplicas: 2 } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    // Well inside the 120 s stats refresh: the HPA watch, not a timer, brings the policy back.
    await waitFor("the budget to follow the HPA", async () => (await s.status("p")).budget?.demand === 134, {
      timeoutMs: 20_000,
    }); // 3×25 + 50 + 9
    await s.patchPolicy("p", { spec: { pool: { maxSize: 10 } } });
    const fits = await s.waitForCondition("p", "BudgetWithinLimits", { status: "True", reason: "WithinLimits" });
    expect(fits.status?.budget?.demand).toBe(3 * 10 + 2 * 10 + 9);
  });

  it('sizes max_connections from the budget with "auto", with one restart', async () => {
    const s = await scenario();
    const bridge = await s.withPostgresWorkload();
    await s.deployment("api", { labels: part, replicas: 4 }); // (4 + 1) × 25 = 125, + 5 reserve = 130
    await s.applyPolicy("p", s.policySpec(restartTo("auto")));
    const p = await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(await s.server.setting("max_connections")).toBe("160"); // 130 × 1.2 = 156 → 160
    expect(p.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
      "auto: demand 130",
    );
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(1);
    await s.waitForCondition("p", "BudgetWithinLimits", { status: "True" });
  });

  it("reports Conflict on both policies that ask different values of one server, and applies nothing until they agree", async () => {
    const s = await scenario();
    const bridge = await s.withPostgresWorkload();
    await s.deployment("api", { labels: part, replicas: 1 });
    // "a" waits for an approval, so that the operator cannot restart for it alone in the moment
    // before "b" exists; the approval comes once the two agree.
    await s.applyPolicy("a", s.policySpec(restartTo(150, { policy: "Manual" })));
    await s.applyPolicy(
      "b",
      s.policySpec({
        ...restartTo(160, { policy: "Manual" }),
        targets: { selector: { matchLabels: { app: "none" } } },
      }),
    );
    for (const name of ["a", "b"]) {
      const p = await s.waitForCondition(name, "MaxConnectionsApplied", { status: "False", reason: "Conflict" });
      expect(p.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
        `${s.namespace}/a (150), ${s.namespace}/b (160)`,
      );
    }
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(0);
    await s.patchPolicy("b", { spec: { postgres: { maxConnections: 150 } } });
    for (const name of ["a", "b"])
      await s.waitForCondition(name, "MaxConnectionsApplied", { reason: "AwaitingApproval" });
    await s.patchPolicy("a", { metadata: { annotations: { "pooling.dbops.io/approve-restart": "150" } } });
    await s.waitForCondition("a", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    await s.waitForCondition("b", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(await s.server.setting("max_connections")).toBe("150");
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(1);
  });
});

describe("ordering by direction", () => {
  it("raises max_connections before a pool grows, and shrinks the pools before lowering it", async () => {
    const s = await scenario();
    const bridge = await s.withPostgresWorkload();
    await s.deployment("api", { labels: part, replicas: 1 });
    await s.applyPolicy("p", s.policySpec({ ...restartTo(100), pool: { maxSize: 10 } }));
    await s.waitForCondition("p", "Ready", { status: "True" });
    const growStarted = new Date();

    // Grow: pool 10 → 60 and max_connections 100 → 150. The new pools need (1 + 1 surge) × 60 + 5
    // reserved = 125 > 100: they must wait for the raise.
    await s.patchPolicy("p", { spec: { postgres: { maxConnections: 150 }, pool: { maxSize: 60 } } });
    await waitFor("the pool to grow", async () => (await s.envOf("api")).DB_POSTGRES_MAX_CONN === "60");
    await s.waitForCondition("p", "Ready", { status: "True" });
    // The order is read from the Events (microsecond eventTime): polling the status could miss
    // a state that lasts less than a poll.
    const grow = await s.events(growStarted);
    expect(grow.some((e) => e.reason === "WaitingForMaxConnections")).toBe(true);
    // The larger pool reached the Deployment only after PostgreSQL had restarted with 150.
    const restartedAt = await s.server.postmasterStartTime();
    const injected = grow.find((e) => e.reason === "EnvInjected" && e.note.includes("DB_POSTGRES_MAX_CONN=60"));
    expect(injected, JSON.stringify(grow, null, 1)).toBeDefined();
    expect(Date.parse(injected!.time)).toBeGreaterThan(restartedAt.getTime());
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(1);

    // Shrink: pool 60 → 10 and max_connections 150 → 110.
    const shrinkStarted = new Date();
    await s.patchPolicy("p", { spec: { postgres: { maxConnections: 110 }, pool: { maxSize: 10 } } });
    await s.waitForCondition("p", "Ready", { status: "True" }, 180_000);
    expect(await s.server.setting("max_connections")).toBe("110");
    const shrink = await s.events(shrinkStarted);
    const shrunk = shrink.findIndex((e) => e.reason === "EnvInjected" && e.note.includes("DB_POSTGRES_MAX_CONN=10"));
    const altered = shrink.findIndex((e) => e.reason === "MaxConnectionsAltered" && e.note.includes("= 110"));
    expect(shrunk).toBeGreaterThanOrEqual(0);
    expect(altered, JSON.stringify(shrink, null, 1)).toBeGreaterThan(shrunk);
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(2);
  });
});

describe("maintenance windows", () => {
  it("restarts only inside the window, and says when the next one opens", async () => {
    const s = await scenario();
    const bridge = await s.withPostgresWorkload();
    await s.deployment("api", { labels: part, replicas: 1 });
    const now = new Date();
    const otherDay = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][(now.getUTCDay() + 3) % 7]!;
    await s.applyPolicy(
      "p",
      s.policySpec(
        restartTo(120, { maintenanceWindow: { days: [otherDay], start: "03:00", duration: "1h", timeZone: "UTC" } }),
      ),
    );
    const waiting = await s.waitForCondition("p", "MaxConnectionsApplied", {
      status: "False",
      reason: "OutsideMaintenanceWindow",
    });
    expect(waiting.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toMatch(
      /next maintenance window opens at \d{4}-\d\d-\d\dT03:00:00.000Z/,
    );
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(0);

    const start = new Date(now.getTime() - 3_600_000);
    const hhmm = `${String(start.getUTCHours()).padStart(2, "0")}:${String(start.getUTCMinutes()).padStart(2, "0")}`;
    const all = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    await s.patchPolicy("p", {
      spec: { postgres: { restart: { maintenanceWindow: { days: all, start: hhmm, duration: "3h" } } } },
    });
    await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(1);
  });
});

describe("PostgreSQL's own timeout as the reaper", () => {
  it("sets idle_in_transaction_session_timeout server-wide or per role, and the server ends such sessions", async () => {
    const s = await scenario();
    await s.server.query("CREATE ROLE app LOGIN PASSWORD 'app-pw'");
    await s.applyPolicy("p", s.policySpec({ reaper: { mode: "ServerTimeout", idleInTransactionTimeout: "2s" } }));
    await s.waitForCondition("p", "ReaperHealthy", { status: "True", reason: "ServerTimeout" });
    expect(await s.server.setting("idle_in_transaction_session_timeout")).toBe("2s");
    expect((await s.events()).some((e) => e.reason === "ServerTimeoutSet")).toBe(true);

    const client = new pg.Client({
      host: "127.0.0.1",
      port: s.server.port,
      user: "app",
      password: "app-pw",
      database: "appdb",
    });
    const ended = new Promise<string>((resolve) =>
      client.on("error", (err: Error & { code?: string }) => resolve(err.code ?? err.message)),
    );
    await client.connect();
    await client.query("BEGIN");
    expect(await ended).toBe("25P03"); // idle_in_transaction_session_timeout, raised by PostgreSQL itself

    await s.patchPolicy("p", {
      spec: { reaper: { serverTimeout: { scope: "Roles", roles: ["app"] }, idleInTransactionTimeout: "3s" } },
    });
    await waitFor(
      "the role setting",
      async () =>
        (
          await s.server.query(
            "SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = 'app' AND 'idle_in_transaction_session_timeout=3000' = ANY(s.setconfig)",
          )
        ).length === 1,
    );
  });
});
