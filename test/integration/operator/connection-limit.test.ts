/**
 * Each app held to its share (issue 16.1), on the real parts: the operator process, the control
 * plane (Deployments roll out on kwok's nodes, an HPA), and a real PostgreSQL whose roles get
 * ALTER ROLE … CONNECTION LIMIT. PostgreSQL itself then refuses the sessions beyond the share
 * ("too many connections for role"), while another app's role still connects.
 *
 * Shares here: the harness's Deployments roll with maxSurge 1, so one replica with a pool of 2
 * is (1 + 1) × 2 = 4 connections at worst.
 */
import { AutoscalingV2Api, type KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";

let kc: KubeConfig;
let operator: OperatorProcess;
const scenarios: Scenario[] = [];
const part = { "app.kubernetes.io/part-of": "shop" };
/** The scenario's base spec selects `part` by this key: a second app overrides its value. */
const jobs = { "app.kubernetes.io/part-of": "jobs" };
const RECORD = "pooling.dbops.io/connection-limit-before";

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  operator = new OperatorProcess({
    kubeconfigPath,
    logFile: runLogFile(kubeconfigPath, "operator-connection-limit"),
    // A role's sessions are read on every pass: a short refresh lets the test see a role reach its limit.
    env: { STATS_REFRESH_SECONDS: "2" },
  });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  for (const s of scenarios) await s.cleanup();
});

async function scenario(): Promise<Scenario> {
  const s = await Scenario.create(kc, { prefix: "roles" });
  scenarios.push(s);
  return s;
}

const enforce = (role: string, margin: number, selector: Record<string, string> = part) => ({
  pool: { minSize: 1, maxSize: 2 },
  targets: { selector: { matchLabels: selector } },
  enforcement: { connectionLimit: { role, margin } },
});

async function limitOf(s: Scenario, role: string): Promise<number> {
  return Number(
    (await s.server.query("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", [role]))[0]!.rolconnlimit,
  );
}

describe("the app role's CONNECTION LIMIT", () => {
  it("holds the role to its share (others still connect), follows an HPA, restores the old limit on deletion", async () => {
    const s = await scenario();
    await s.server.query("CREATE ROLE shop_app LOGIN PASSWORD 'shop-pw-1' CONNECTION LIMIT 7");
    await s.server.query("CREATE ROLE web_app LOGIN PASSWORD 'web-pw-2'");
    await s.deployment("api", { labels: part, replicas: 1 });
    await s.applyPolicy("p", s.policySpec(enforce("shop_app", 0)));

    const p = await s.waitForCondition("p", "RoleConnectionLimit", { status: "True", reason: "Enforced" });
    expect(await limitOf(s, "shop_app")).toBe(4);
    expect(p.status?.connectionLimit).toMatchObject({ role: "shop_app", limit: 4, demand: 4, policies: 1, before: 7 });
    expect(p.metadata.annotations?.[RECORD]).toBe('{"role":"shop_app","before":7}');
    await waitFor("the Event that announced the change", async () =>
      (await s.events()).some(
        (e) => e.reason === "ConnectionLimitLowered" && e.note.startsWith('CONNECTION LIMIT of role "shop_app" 7 → 4'),
      ),
    );

    const sessions = [];
    for (let i = 0; i < 4; i++) sessions.push(await s.session(`api-${i}`, "shop_app", "shop-pw-1"));
    await expect(s.session("api-4", "shop_app", "shop-pw-1")).rejects.toThrow(
      'too many connections for role "shop_app"',
    );
    const web = await s.session("web-0", "web_app", "web-pw-2");
    expect((await web.query("SELECT current_user AS who")).rows[0].who).toBe("web_app");

    const reached = await s.waitForCondition("p", "RoleConnectionLimit", { status: "False", reason: "LimitReached" });
    expect(reached.status?.conditions?.find((c) => c.type === "RoleConnectionLimit")?.message).toContain(
      'role "shop_app" has 4 session(s), its CONNECTION LIMIT is 4',
    );
    expect(reached.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
    await waitFor("a Warning Event LimitReached", async () =>
      (await s.events()).some((e) => e.reason === "LimitReached" && e.type === "Warning"),
    );
    for (const c of sessions) await c.end();

    // An HPA may scale api to 3: (3 + 1) × 2 = 8, raised at once (no rollout: the pools did not change).
    await kc.makeApiClient(AutoscalingV2Api).createNamespacedHorizontalPodAutoscaler({
      namespace: s.namespace,
      body: {
        metadata: { name: "api" },
        spec: { scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: "api" }, maxReplicas: 3 },
      },
    });
    await waitFor("the limit to follow the HPA", async () => (await limitOf(s, "shop_app")) === 8);
    await s.waitForCondition("p", "RoleConnectionLimit", { status: "True", reason: "Enforced" });
    expect((await s.status("p")).connectionLimit).toMatchObject({ limit: 8, demand: 8, current: 8, before: 7 });

    await s.deletePolicy("p");
    await waitFor("the policy to be gone", async () => (await s.readPolicy("p")) === undefined);
    expect(await limitOf(s, "shop_app")).toBe(7);
    expect(await limitOf(s, "web_app")).toBe(-1);
    const reasons = (await s.events()).map((e) => e.reason);
    expect(reasons).toEqual(expect.arrayContaining(["ConnectionLimitRaised", "ConnectionLimitRestored"]));
  });

  it("two policies on one role add up; the role keeps the survivor's share; a superuser is refused", async () => {
    const s = await scenario();
    await s.server.query("CREATE ROLE shared_app LOGIN PASSWORD 'shared-pw-3'");
    await s.server.query("CREATE ROLE root_app SUPERUSER LOGIN PASSWORD 'root-pw-4'");
    await s.deployment("api", { labels: part, replicas: 1 });
    await s.deployment("jobs", { labels: jobs, replicas: 2 }); // (2 + 1) × 2 = 6
    await s.applyPolicy("p", s.policySpec(enforce("shared_app", 1)));
    await s.applyPolicy("q", s.policySpec(enforce("shared_app", 2, jobs)));
    await waitFor("the summed share", async () => (await limitOf(s, "shared_app")) === 4 + 1 + 6 + 2);
    for (const name of ["p", "q"]) {
      const policy = await s.waitForCondition(name, "RoleConnectionLimit", { status: "True", reason: "Enforced" });
      expect(policy.status?.connectionLimit).toMatchObject({ limit: 13, demand: 10, policies: 2, before: -1 });
    }

    await s.deletePolicy("q");
    await waitFor("q to be gone", async () => (await s.readPolicy("q")) === undefined);
    // p's apps did not change: the role now gets p's share alone, not the limit from before.
    await waitFor("the survivor's share", async () => (await limitOf(s, "shared_app")) === 5);

    await s.patchPolicy("p", { spec: { enforcement: { connectionLimit: { role: "root_app" } } } });
    const refused = await s.waitForCondition("p", "RoleConnectionLimit", {
      status: "False",
      reason: "RoleIsSuperuser",
    });
    expect(refused.status?.conditions?.find((c) => c.type === "RoleConnectionLimit")?.message).toContain(
      "PostgreSQL ignores CONNECTION LIMIT for superusers",
    );
    // p no longer names shared_app, and no other policy does: its old limit (none) is back.
    expect(await limitOf(s, "shared_app")).toBe(-1);
    expect(await limitOf(s, "root_app")).toBe(-1);
    expect((await s.readPolicy("p"))?.metadata.annotations?.[RECORD]).toBeUndefined();
  });
});
