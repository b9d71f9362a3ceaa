/**
 * A rotated password reaches the operator through its watch of the credentials Secret, not at
 * the next periodic pass: this operator refreshes statistics and resyncs only once an hour, and
 * the policy's reaper is off, so nothing but the Secret's watch event can bring the policy back
 * within the test's waits. Real control plane, real PostgreSQL.
 */
import { afterAll, beforeAll, expect, inject, it } from "vitest";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";

const HOUR = "3600";
const pw = (label: string) => `${label}-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
const passwords = [pw("first"), pw("second"), pw("third")] as const;

let scenario: Scenario;
let operator: OperatorProcess;
const logFile = join(tmpdir(), `operator-rotation-${Date.now()}.log`);

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  const kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  scenario = await Scenario.create(kc, { prefix: "rotate" });
  // The operator's own login, so that rotating it leaves the harness's superuser alone.
  await scenario.server.query(`CREATE ROLE rotator SUPERUSER LOGIN PASSWORD '${passwords[0]}'`);
  await scenario.core.createNamespacedSecret({
    namespace: scenario.namespace,
    body: { metadata: { name: "rotator" }, stringData: { username: "rotator", password: passwords[0] } },
  });
  await scenario.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  operator = new OperatorProcess({
    kubeconfigPath,
    logFile,
    env: { STATS_REFRESH_SECONDS: HOUR, RESYNC_SECONDS: HOUR },
  });
  await operator.start();
  await scenario.applyPolicy(
    "p",
    scenario.policySpec({ postgres: { credentialsSecret: { name: "rotator" } }, reaper: { enabled: false } }),
  );
  await scenario.waitForCondition("p", "Ready", { status: "True" });
});

afterAll(async () => {
  await operator?.stop();
  await scenario?.cleanup();
});

/** The operator's sessions as the rotated role: pid and when each began. */
async function operatorSessions(): Promise<Array<{ pid: number; started: Date }>> {
  const rows = await scenario.server.query<{ pid: number; backend_start: Date }>(
    "SELECT pid, backend_start FROM pg_stat_activity WHERE usename = 'rotator' AND application_name = 'poolpolicy-operator'",
  );
  return rows.map((r) => ({ pid: r.pid, started: r.backend_start }));
}

async function setSecretPassword(password: string): Promise<void> {
  await scenario.core.patchNamespacedSecret({
    name: "rotator",
    namespace: scenario.namespace,
    body: [{ op: "replace", path: "/data/password", value: Buffer.from(password).toString("base64") }],
  });
}

/** A metadata-only change: it brings one reconcile of the policy and changes nothing it reads. */
async function poke(value: string): Promise<void> {
  await scenario.patchPolicy("p", { metadata: { annotations: { "test.dbops.io/poke": value } } });
}

// Which event brings the pass does not matter here (a rollout of the target may too): the next
// test proves that the Secret's watch alone does.
it("closes the pool of the old password, and logs in with the new one, after a rotation", async () => {
  // A pass now, so that the pool of the first password holds a session at the rotation.
  await poke("1");
  let before: Array<{ pid: number; started: Date }> = [];
  await waitFor("the operator's session with the first password", async () => {
    before = await operatorSessions();
    return before.length > 0;
  });

  // Rotation as an administrator does it: PostgreSQL first (sessions already open keep
  // working), then the Secret.
  await scenario.server.query(`ALTER ROLE rotator PASSWORD '${passwords[1]}'`);
  await setSecretPassword(passwords[1]);

  // Only a pass with the new password opens a new session, and it closes the old pool.
  const oldPids = new Set(before.map((s) => s.pid));
  let after: Array<{ pid: number; started: Date }> = [];
  await waitFor(
    "a session with the new password, and none of the old pool's left",
    async () => {
      after = await operatorSessions();
      return after.length > 0 && after.every((s) => !oldPids.has(s.pid));
    },
    { timeoutMs: 60_000, intervalMs: 200 },
  );
  expect(after.every((s) => !oldPids.has(s.pid))).toBe(true);
  const status = await scenario.status("p");
  expect(status.conditions?.find((c) => c.type === "PostgresReachable")).toMatchObject({
    status: "True",
    reason: "Connected",
  });
});

it("is PostgresReachable=True again once a Secret with the working password arrives after a failed login", async () => {
  // The password changes in PostgreSQL only, and the operator's sessions are cut: its next pass
  // cannot log in.
  await scenario.server.query(`ALTER ROLE rotator PASSWORD '${passwords[2]}'`);
  await scenario.server.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'rotator'");
  await poke("2");
  await scenario.waitForCondition("p", "PostgresReachable", { status: "False", reason: "AuthenticationFailed" });

  // A failed pass asks to come back after the hour-long refresh: only the Secret's watch event
  // can bring the policy back within this wait.
  await setSecretPassword(passwords[2]);
  const policy = await scenario.waitForCondition(
    "p",
    "PostgresReachable",
    { status: "True", reason: "Connected" },
    60_000,
  );
  expect(policy.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
});

it("writes none of the passwords to its log", () => {
  const log = readFileSync(logFile, "utf8");
  expect(log.length).toBeGreaterThan(0);
  for (const password of passwords) expect(log.includes(password), "a password in the operator's log").toBe(false);
});
