import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { planTopologyRestart, type PodState } from "../../../src/controller/topology.js";

const now = new Date("2026-11-26T12:00:00Z");
const pod = (
  ordinal: number,
  role: "primary" | "replica",
  maxConnections: number,
  extra: Partial<PodState> = {},
): PodState => ({
  name: `postgres-${ordinal}`,
  ordinal,
  ready: true,
  role,
  maxConnections,
  alterSystemValue: maxConnections,
  postmasterStartTime: new Date(0),
  lsn: 100n,
  ...extra,
});

describe("planTopologyRestart", () => {
  it("alters every pod first: ALTER SYSTEM is not replicated", () => {
    expect(planTopologyRestart([pod(0, "primary", 100), pod(1, "replica", 100)], 150, now, 0)).toEqual({
      kind: "alter",
      pods: ["postgres-0", "postgres-1"],
    });
  });

  it("raising: replicas first, the primary last", () => {
    const altered = { alterSystemValue: 150 };
    const first = planTopologyRestart([pod(0, "primary", 100, altered), pod(1, "replica", 100, altered)], 150, now, 0);
    expect(first).toMatchObject({ kind: "restart", pod: "postgres-1" });
    const second = planTopologyRestart([pod(0, "primary", 100, altered), pod(1, "replica", 150, altered)], 150, now, 0);
    expect(second).toMatchObject({ kind: "restart", pod: "postgres-0" });
  });

  it("lowering: the primary first, then each replica once it has replayed past the primary", () => {
    const altered = { alterSystemValue: 80 };
    expect(
      planTopologyRestart([pod(0, "replica", 100, altered), pod(1, "primary", 100, altered)], 80, now, 0),
    ).toMatchObject({ kind: "restart", pod: "postgres-1" });
    const lagging = [
      pod(0, "replica", 100, { ...altered, lsn: 50n }),
      pod(1, "primary", 80, { ...altered, lsn: 200n }),
    ];
    expect(planTopologyRestart(lagging, 80, now, 0)).toMatchObject({ kind: "wait", reason: "WaitingForReplay" });
    const replayed = [
      pod(0, "replica", 100, { ...altered, lsn: 200n }),
      pod(1, "primary", 80, { ...altered, lsn: 200n }),
    ];
    expect(planTopologyRestart(replayed, 80, now, 0)).toMatchObject({ kind: "restart", pod: "postgres-0" });
  });

  it("does nothing while a pod is not Ready, and paces restarts", () => {
    const altered = { alterSystemValue: 150 };
    expect(
      planTopologyRestart(
        [pod(0, "primary", 100, altered), pod(1, "replica", 100, { ...altered, ready: false })],
        150,
        now,
        0,
      ).kind,
    ).toBe("wait");
    const justRestarted = [
      pod(0, "primary", 100, altered),
      pod(1, "replica", 150, { ...altered, postmasterStartTime: new Date(now.getTime() - 2_000) }),
    ];
    expect(planTopologyRestart(justRestarted, 150, now, 10_000)).toMatchObject({ kind: "wait", untilMs: 8_000 });
  });

  it("property: any group converges with one restart per pod and never puts a replica below the primary", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.nat(),
        fc.integer({ min: 10, max: 1000 }),
        fc.integer({ min: 10, max: 1000 }),
        fc.array(fc.boolean(), { maxLength: 40 }),
        (size, primaryPick, current, desired, lags) => {
          fc.pre(current !== desired);
          const primaryOrdinal = primaryPick % size;
          const pods: PodState[] = Array.from({ length: size }, (_, i) =>
            pod(i, i === primaryOrdinal ? "primary" : "replica", current),
          );
          const restarts = new Map<string, number>();
          let clock = now.getTime();
          for (let step = 0; step < 4 * size + 40; step++) {
            const plan = planTopologyRestart(pods, desired, new Date(clock), 0);
            if (plan.kind === "done") {
              expect([...restarts.values()].every((n) => n === 1)).toBe(true);
              expect(restarts.size).toBe(size);
              return;
            }
            if (plan.kind === "alter")
              for (const name of plan.pods) pods.find((p) => p.name === name)!.alterSystemValue = desired;
            if (plan.kind === "restart") {
              const p = pods.find((x) => x.name === plan.pod)!;
              p.maxConnections = p.alterSystemValue;
              p.postmasterStartTime = new Date(clock);
              restarts.set(p.name, (restarts.get(p.name) ?? 0) + 1);
              if (p.role === "primary") p.lsn = p.lsn! + 10n; // its start-up writes WAL, the new setting among it
            }
            // Replicas replay, sometimes late.
            const primary = pods.find((p) => p.role === "primary")!;
            for (const r of pods.filter((p) => p.role === "replica"))
              if (!lags[step % Math.max(1, lags.length)]) r.lsn = primary.lsn;
            if (plan.kind === "wait" && plan.reason === "WaitingForReplay") for (const r of pods) r.lsn = primary.lsn;
            // The hot-standby rule, after every step.
            for (const r of pods.filter((p) => p.role === "replica"))
              expect(r.maxConnections!).toBeGreaterThanOrEqual(primary.maxConnections!);
            clock += 1000;
          }
          throw new Error("did not converge");
        },
      ),
      { numRuns: 500 },
    );
  });
});
