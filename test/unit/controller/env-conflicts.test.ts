import { describe, expect, it } from "vitest";
import type { V1Deployment, V1EnvVar } from "@kubernetes/client-node";
import {
  MAX_TAKES,
  RETRY_AFTER_MS,
  TAKE_WINDOW_MS,
  carriedConflict,
  conflictingManagers,
  disagreement,
  onConflict,
  stillYielded,
  type EnvConflict,
} from "../../../src/controller/env-conflicts.js";

const t0 = new Date("2026-11-30T10:00:00Z");
const at = (ms: number) => new Date(t0.getTime() + ms);
const seen = { manager: "argocd-controller", theirs: "DB_POSTGRES_MAX_CONN=50", ours: "DB_POSTGRES_MAX_CONN=25" };

/** Plays a fight: the other manager overwrites at each of `times`; returns the steps taken. */
function fight(times: number[], start?: EnvConflict) {
  let state = start;
  return times.map((ms) => {
    const step = onConflict(state, seen, at(ms));
    state = step.conflict;
    return step;
  });
}

describe("onConflict: a bounded fight over the pool env", () => {
  it(`takes the entries back ${MAX_TAKES} times within the window, then yields once and stays yielded`, () => {
    const steps = fight([0, 15_000, 30_000, 45_000, 60_000, 75_000]);
    expect(steps.map((s) => s.kind)).toEqual(["take", "take", "take", "yield", "yield", "yield"]);
    expect(steps.map((s) => (s.kind === "take" ? s.warn : s.announce))).toEqual([
      false,
      true,
      true,
      true,
      false,
      false,
    ]);
    expect(steps[3]!.conflict).toMatchObject({ takes: MAX_TAKES, yieldedAt: at(45_000).toISOString(), ...seen });
  });

  it("counts anew when the overwrites are further apart than the window: edits now and then are no fight", () => {
    const apart = TAKE_WINDOW_MS + 1;
    const steps = fight([0, apart, 2 * apart, 3 * apart, 4 * apart]);
    expect(steps.every((s) => s.kind === "take" && s.conflict.takes === 1)).toBe(true);
  });

  it("takes once more after the pause, and yields again at the next overwrite", () => {
    const yielded = fight([0, 1, 2, 3]).at(-1)!.conflict;
    expect(onConflict(yielded, seen, at(3 + RETRY_AFTER_MS - 1)).kind).toBe("yield");
    const retry = onConflict(yielded, seen, at(3 + RETRY_AFTER_MS));
    expect(retry).toMatchObject({ kind: "take", warn: true });
    expect(retry.conflict.yieldedAt).toBeUndefined();
    const again = onConflict(retry.conflict, seen, at(3 + RETRY_AFTER_MS + 15_000));
    expect(again).toMatchObject({ kind: "yield", announce: true });
  });

  it("starts a new count for another manager or another wanted value", () => {
    const yielded = fight([0, 1, 2, 3]).at(-1)!.conflict;
    expect(onConflict(yielded, { ...seen, manager: "kustomize-controller" }, at(4))).toMatchObject({
      kind: "take",
      warn: false,
      conflict: { takes: 1, manager: "kustomize-controller" },
    });
    expect(onConflict(yielded, { ...seen, ours: "DB_POSTGRES_MAX_CONN=30" }, at(4)).kind).toBe("take");
  });

  it("leaves a yielded Deployment alone without a request while nothing changed and no retry is due", () => {
    const yielded = fight([0, 1, 2, 3]).at(-1)!.conflict;
    expect(stillYielded(yielded, seen.theirs, seen.ours, at(10))).toBe(true);
    expect(stillYielded(yielded, "DB_POSTGRES_MAX_CONN=60", seen.ours, at(10))).toBe(false);
    expect(stillYielded(yielded, seen.theirs, seen.ours, at(3 + RETRY_AFTER_MS))).toBe(false);
    expect(stillYielded(fight([0])[0]!.conflict, seen.theirs, seen.ours, at(10))).toBe(false);
  });

  it("keeps the count of a Deployment that holds our values only while its window lasts, and ends a yield", () => {
    const counting = fight([0, 1])[1]!.conflict;
    expect(carriedConflict(counting, at(TAKE_WINDOW_MS))).toBe(counting);
    expect(carriedConflict(counting, at(TAKE_WINDOW_MS + 1))).toBeUndefined();
    expect(carriedConflict(fight([0, 1, 2, 3]).at(-1)!.conflict, at(10))).toBeUndefined();
    expect(carriedConflict(undefined, at(0))).toBeUndefined();
  });
});

describe("conflictingManagers: who a failed server-side apply names", () => {
  const conflict = (body: unknown) => Object.assign(new Error("HTTP 409"), { code: 409, body });
  const status = {
    kind: "Status",
    reason: "Conflict",
    code: 409,
    message: 'Apply failed with 1 conflict: conflict with "argocd-controller" using apps/v1: .spec…',
    details: {
      causes: [
        {
          type: "FieldManagerConflict",
          message: 'conflict with "argocd-controller" using apps/v1',
          field: '.spec.template.spec.containers[name="app"].env[name="DB_POSTGRES_MAX_CONN"].value',
        },
        {
          type: "FieldManagerConflict",
          message: 'conflict with "argocd-controller" using apps/v1',
          field: '.spec.template.spec.containers[name="app"].env[name="DB_POSTGRES_MIN_CONN"].value',
        },
        { type: "FieldManagerConflict", message: 'conflict with "kubectl-edit" using apps/v1', field: ".x" },
      ],
    },
  };

  it("reads the managers from the Status, as a string or parsed", () => {
    expect(conflictingManagers(conflict(JSON.stringify(status)))).toEqual(["argocd-controller", "kubectl-edit"]);
    expect(conflictingManagers(conflict(status))).toEqual(["argocd-controller", "kubectl-edit"]);
  });

  it("is undefined for any other failure", () => {
    expect(conflictingManagers(Object.assign(new Error("x"), { code: 422, body: status }))).toBeUndefined();
    expect(conflictingManagers(conflict({ kind: "Status", reason: "Conflict", code: 409 }))).toBeUndefined();
    expect(conflictingManagers(new Error("socket hang up"))).toBeUndefined();
  });
});

describe("disagreement: both values, for the condition and the Event", () => {
  const deployment = (env: V1EnvVar[]): V1Deployment => ({
    spec: {
      selector: {},
      template: { spec: { containers: [{ name: "app", env }, { name: "sidecar" }] } },
    },
  });
  const want = [
    { name: "DB_POSTGRES_MIN_CONN", value: "5" },
    { name: "DB_POSTGRES_MAX_CONN", value: "25" },
  ];

  it("names only the entries that differ, with their values", () => {
    const d = deployment([
      { name: "DB_POSTGRES_MIN_CONN", value: "5" },
      { name: "DB_POSTGRES_MAX_CONN", value: "50" },
    ]);
    expect(disagreement(d, ["app"], want)).toEqual({
      theirs: "DB_POSTGRES_MAX_CONN=50",
      ours: "DB_POSTGRES_MAX_CONN=25",
    });
  });

  it("says unset and valueFrom rather than inventing a value", () => {
    const d = deployment([{ name: "DB_POSTGRES_MAX_CONN", valueFrom: { configMapKeyRef: { name: "c", key: "k" } } }]);
    expect(disagreement(d, ["app"], want).theirs).toBe(
      "DB_POSTGRES_MIN_CONN unset, DB_POSTGRES_MAX_CONN from valueFrom",
    );
  });
});
