import { describe, expect, it } from "vitest";
import {
  planMaxConnections,
  parseRestartRecord,
  formatRestartRecord,
  type MaxConnectionsInput,
} from "../../../src/controller/max-connections.js";
import type { PodState } from "../../../src/controller/topology.js";
import type { ServerFacts } from "../../../src/postgres/inspect.js";
import { serverFacts } from "../fixtures/server-facts.js";

const T0 = new Date("2026-11-26T10:00:00.000Z");
const T1 = new Date("2026-11-26T10:05:00.000Z");

const facts = (over: Partial<ServerFacts> = {}): ServerFacts =>
  serverFacts({
    settingSource: "default",
    connections: { total: 1, active: 1, idle: 0, idleInTransaction: 0 },
    ...over,
  });
const workload = {
  configured: true,
  found: true,
  rolledOut: true,
  record: undefined,
  description: "StatefulSet db/postgres",
};
const gate = (over: Partial<MaxConnectionsInput["gate"]> = {}): MaxConnectionsInput["gate"] => ({
  policyName: "orders",
  workload: { kind: "StatefulSet", name: "postgres", namespace: "db" },
  restartPolicy: "Automatic",
  approval: undefined,
  limit: { max: 3, history: [] },
  now: T1,
  ...over,
});
const input = (over: Partial<MaxConnectionsInput> = {}): MaxConnectionsInput => ({
  desired: 200,
  facts: facts(),
  workload,
  gate: gate(),
  ...over,
});

describe("planMaxConnections", () => {
  it("alters, then requests one restart recorded against the current postmaster start", () => {
    const plan = planMaxConnections(input());
    expect(plan.alterTo).toBe(200);
    expect(plan.requestRestart).toEqual({ value: 200, after: T0 });
    expect(plan.restarting).toBe(true);
  });

  it("after a crash past the request, waits instead of restarting again", () => {
    const plan = planMaxConnections(
      input({
        facts: facts({ alterSystemValue: 200, pendingRestart: true }),
        workload: { ...workload, rolledOut: false, record: { value: 200, after: T0 } },
      }),
    );
    expect(plan.requestRestart).toBeUndefined();
    expect(plan.alterTo).toBeUndefined();
    expect(plan.condition.reason).toBe("RestartInProgress");
  });

  it("reports Applied, verified, once the new postmaster runs with the value", () => {
    const plan = planMaxConnections(
      input({
        facts: facts({ maxConnections: 200, postmasterStartTime: T1 }),
        workload: { ...workload, record: { value: 200, after: T0 } },
      }),
    );
    expect(plan.condition).toMatchObject({ status: "True", reason: "Applied" });
    expect(plan.condition.message).toContain("verified after the restart");
    expect(plan.restarting).toBe(false);
  });

  it("does not restart twice when the restart happened but the value did not change", () => {
    const plan = planMaxConnections(
      input({
        facts: facts({ postmasterStartTime: T1, settingSource: "configuration file" }),
        workload: { ...workload, record: { value: 200, after: T0 } },
      }),
    );
    expect(plan.requestRestart).toBeUndefined();
    expect(plan.condition.reason).toBe("VerificationFailed");
  });

  it("refuses to fight a command-line setting", () => {
    const plan = planMaxConnections(input({ facts: facts({ settingSource: "command line" }) }));
    expect(plan.alterTo).toBeUndefined();
    expect(plan.requestRestart).toBeUndefined();
    expect(plan.condition).toMatchObject({ status: "False", reason: "CommandLineOverride" });
    expect(plan.condition.message).toContain("ALTER SYSTEM cannot change it");
  });

  it("without access to pg_file_settings, alters once and then trusts the pending restart", () => {
    expect(planMaxConnections(input({ facts: facts({ mayReadConfigFiles: false }) })).alterTo).toBe(200);
    expect(
      planMaxConnections(input({ facts: facts({ mayReadConfigFiles: false, pendingRestart: true }) })).alterTo,
    ).toBeUndefined();
  });

  it("reports allow_alter_system = off", () => {
    expect(planMaxConnections(input({ facts: facts({ allowAlterSystem: false }) })).condition.reason).toBe(
      "AlterSystemDisabled",
    );
  });

  it("under policy Manual, changes nothing before the approval names the value (no ALTER SYSTEM either)", () => {
    const waiting = planMaxConnections(input({ gate: gate({ restartPolicy: "Manual", approval: "150" }) }));
    expect(waiting.condition.reason).toBe("AwaitingApproval");
    expect(waiting.alterTo).toBeUndefined();
    expect(waiting.requestRestart).toBeUndefined();
    expect(waiting.condition.message).toContain(
      "kubectl annotate poolpolicy orders --overwrite pooling.dbops.io/approve-restart=200",
    );
    const approved = planMaxConnections(input({ gate: gate({ restartPolicy: "Manual", approval: "200" }) }));
    expect(approved).toMatchObject({ alterTo: 200, requestRestart: { value: 200 } });
  });

  it("outside the maintenance window, changes nothing and says when the window opens", () => {
    const next = new Date("2026-11-28T02:00:00.000Z");
    const plan = planMaxConnections(input({ gate: gate({ window: { open: false, nextStart: next } }) }));
    expect(plan).toMatchObject({
      restarting: false,
      nextWindow: next,
      condition: { reason: "OutsideMaintenanceWindow" },
    });
    expect(plan.alterTo).toBeUndefined();
    expect(plan.condition.message).toContain(next.toISOString());
  });

  it("past the restart limit, holds restarts (and ALTER SYSTEM) and says how to release them", () => {
    const history = [new Date(T1.getTime() - 50 * 60_000), new Date(T1.getTime() - 20 * 60_000), T0];
    const plan = planMaxConnections(input({ gate: gate({ limit: { max: 3, history } }) }));
    expect(plan).toMatchObject({ restarting: false, holdRestarts: true, condition: { reason: "RestartLimitReached" } });
    expect(plan.alterTo).toBeUndefined();
    expect(plan.requestRestart).toBeUndefined();
    expect(plan.condition.message).toContain(
      "kubectl annotate statefulset postgres -n db pooling.dbops.io/restarts-held- pooling.dbops.io/restart-history-",
    );
    // Restarts older than an hour do not count.
    const old = history.map((t) => new Date(t.getTime() - 61 * 60_000));
    expect(planMaxConnections(input({ gate: gate({ limit: { max: 3, history: old } }) })).requestRestart).toBeDefined();
  });

  it("once held, stays held whatever the history says, until a person removes the hold", () => {
    const plan = planMaxConnections(input({ gate: gate({ limit: { max: 3, history: [], heldSince: T0 } }) }));
    expect(plan.condition.reason).toBe("RestartLimitReached");
    expect(plan.holdRestarts).toBeFalsy();
    expect(plan.requestRestart).toBeUndefined();
  });

  it("is not Applied while the workload still rolls out, even if the answering pod shows the value", () => {
    const plan = planMaxConnections(
      input({
        facts: facts({ maxConnections: 200, postmasterStartTime: T1 }),
        workload: { ...workload, rolledOut: false, record: { value: 150, after: T0 } },
      }),
    );
    expect(plan).toMatchObject({ restarting: true, condition: { status: "False", reason: "RestartInProgress" } });
  });

  it("a second value during a restart is written at once, without a second restart request", () => {
    const plan = planMaxConnections(
      input({
        facts: facts({ maxConnections: 100, alterSystemValue: 150, pendingRestart: true }),
        workload: { ...workload, rolledOut: false, record: { value: 150, after: T0 } },
      }),
    );
    expect(plan).toMatchObject({ alterTo: 200, restarting: true, condition: { reason: "RestartInProgress" } });
    expect(plan.requestRestart).toBeUndefined();
    // The rollout ended with the new value read at start: Applied, no more restarts.
    const after = planMaxConnections(
      input({
        facts: facts({ maxConnections: 200, alterSystemValue: 200, postmasterStartTime: T1 }),
        workload: { ...workload, record: { value: 150, after: T0 } },
      }),
    );
    expect(after).toMatchObject({ verifiedRestart: true, condition: { status: "True", reason: "Applied" } });
    expect(after.requestRestart).toBeUndefined();
    // …or, had the instance started before the ALTER, exactly one more restart.
    const oneMore = planMaxConnections(
      input({
        facts: facts({ maxConnections: 150, alterSystemValue: 200, postmasterStartTime: T1 }),
        workload: { ...workload, record: { value: 150, after: T0 } },
      }),
    );
    expect(oneMore.requestRestart).toEqual({ value: 200, after: T1 });
  });

  it("without a workload, alters and says a restart is needed", () => {
    const plan = planMaxConnections(input({ workload: { ...workload, configured: false } }));
    expect(plan).toMatchObject({ alterTo: 200, condition: { reason: "RestartRequired" } });
    expect(plan.requestRestart).toBeUndefined();
  });

  it("with a missing workload, reports it and writes nothing", () => {
    const plan = planMaxConnections(input({ workload: { ...workload, found: false } }));
    expect(plan.condition.reason).toBe("WorkloadNotFound");
    expect(plan.alterTo).toBeUndefined();
  });

  it("leaves max_connections alone when not managed", () => {
    expect(planMaxConnections(input({ desired: undefined })).condition).toMatchObject({
      status: "True",
      reason: "NotManaged",
    });
  });

  it("while PostgreSQL is unreachable mid-restart, keeps the restart in progress", () => {
    const plan = planMaxConnections(
      input({ facts: undefined, workload: { ...workload, record: { value: 200, after: T0 } } }),
    );
    expect(plan).toMatchObject({ restarting: true, condition: { status: "Unknown", reason: "RestartInProgress" } });
  });

  it("round-trips the restart record and ignores garbage", () => {
    expect(parseRestartRecord(formatRestartRecord({ value: 200, after: T0 }))).toEqual({ value: 200, after: T0 });
    expect(parseRestartRecord("200")).toBeUndefined();
    expect(parseRestartRecord("x@y")).toBeUndefined();
    expect(parseRestartRecord(undefined)).toBeUndefined();
  });
});

describe("planMaxConnections for a primary with replicas (a group)", () => {
  const member = (ordinal: number, maxConnections: number, over: Partial<PodState> = {}): PodState => ({
    name: `postgres-${ordinal}`,
    ordinal,
    ready: true,
    role: ordinal === 0 ? "primary" : "replica",
    maxConnections,
    alterSystemValue: maxConnections,
    postmasterStartTime: T0,
    lsn: 10n,
    ...over,
  });
  const grouped = (pods: PodState[], over: Partial<MaxConnectionsInput> = {}) =>
    planMaxConnections(
      input({ facts: facts({ maxConnections: pods[0]!.maxConnections }), ...over, group: { pods, delayMs: 0 } }),
    );

  it("alters every pod, then restarts one pod at a time; only the first restart of a change counts", () => {
    const altered = { alterSystemValue: 200 };
    expect(grouped([member(0, 100), member(1, 100)])).toMatchObject({
      alterTo: 200,
      alterOn: ["postgres-0", "postgres-1"],
      restarting: true,
    });
    const first = grouped([member(0, 100, altered), member(1, 100, altered)]);
    expect(first.restartPod).toMatchObject({ name: "postgres-1", first: true });
    const second = grouped([member(0, 100, altered), member(1, 200, altered)]);
    expect(second.restartPod).toMatchObject({ name: "postgres-0", first: false });
    expect(grouped([member(0, 200), member(1, 200)])).toMatchObject({
      verifiedRestart: true,
      condition: { status: "True", reason: "Applied" },
    });
  });

  it("applies the same gates as one instance before anything is changed", () => {
    const pods = [member(0, 100), member(1, 100)];
    const manual = grouped(pods, { gate: gate({ restartPolicy: "Manual" }) });
    expect(manual).toMatchObject({ condition: { reason: "AwaitingApproval" } });
    expect(manual.alterTo).toBeUndefined();
    for (const [over, reason] of [
      [{ settingSource: "command line" }, "CommandLineOverride"],
      [{ allowAlterSystem: false }, "AlterSystemDisabled"],
      [{ mayAlterMaxConnections: false }, "PermissionDenied"],
    ] as const) {
      const plan = planMaxConnections(input({ facts: facts(over), group: { pods, delayMs: 0 } }));
      expect(plan.condition.reason).toBe(reason);
      expect(plan.alterTo).toBeUndefined();
      expect(plan.restartPod).toBeUndefined();
    }
  });

  it("finishes a change under way even when the gate has closed meanwhile", () => {
    const altered = { alterSystemValue: 200 };
    const plan = grouped([member(0, 100, altered), member(1, 200, altered)], {
      gate: gate({ restartPolicy: "Manual" }),
    });
    expect(plan.restartPod).toMatchObject({ name: "postgres-0", first: false });
  });

  it("past the restart limit, holds the group like one instance", () => {
    const history = [T0, T0, T0];
    const plan = grouped([member(0, 100), member(1, 100)], { gate: gate({ limit: { max: 3, history } }) });
    expect(plan).toMatchObject({ holdRestarts: true, condition: { reason: "RestartLimitReached" } });
    expect(plan.alterTo).toBeUndefined();
  });
});
