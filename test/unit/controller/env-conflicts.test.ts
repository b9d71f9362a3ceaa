import { describe, expect, it } from "vitest";
import type { V1Deployment, V1EnvVar } from "@kubernetes/client-node";
import {
  MAX_TAKES,
  RETRY_AFTER_MS,
  TAKE_WINDOW_MS,
  TAKES_ANNOTATION,
  conflictingManagers,
  disagreement,
  onConflict,
  recentFight,
  stillYielded,
  takesAnnotation,
  takesOf,
  type Takes,
} from "../../../src/controller/env-conflicts.js";

const t0 = new Date("2026-11-30T10:00:00Z");
const at = (ms: number) => new Date(t0.getTime() + ms);
const seen = { manager: "argocd-controller", theirs: "DB_POSTGRES_MAX_CONN=50", ours: "DB_POSTGRES_MAX_CONN=25" };

/** Plays a fight: the other manager overwrites at each of `times`; the record is what the last take wrote. */
function fight(times: number[], start?: Takes) {
  let record = start;
  return times.map((ms) => {
    const step = onConflict(record, seen, at(ms));
    if (step.kind === "take") record = step.takes;
    return step;
  });
}

describe("onConflict: a bounded fight over the pool env", () => {
  it(`takes the entries back ${MAX_TAKES} times within the window, then yields and stays yielded`, () => {
    const steps = fight([0, 15_000, 30_000, 45_000, 60_000, 75_000]);
    expect(steps.map((s) => s.kind)).toEqual(["take", "take", "take", "yield", "yield", "yield"]);
    expect(steps.map((s) => s.kind === "take" && s.warn)).toEqual([false, true, true, false, false, false]);
    expect(steps[3]!.takes).toMatchObject({
      takes: MAX_TAKES,
      since: t0.toISOString(),
      last: at(30_000).toISOString(),
    });
  });

  it("counts anew when the overwrites are further apart than the window: edits now and then are no fight", () => {
    const apart = TAKE_WINDOW_MS + 1;
    const steps = fight([0, apart, 2 * apart, 3 * apart, 4 * apart]);
    expect(steps.every((s) => s.kind === "take" && s.takes.takes === 1)).toBe(true);
  });

  it("takes once more an hour after the last take, and yields again at the next overwrite", () => {
    const full = (fight([0, 1, 2]).at(-1) as { takes: Takes }).takes;
    expect(onConflict(full, seen, at(2 + RETRY_AFTER_MS - 1)).kind).toBe("yield");
    const retry = onConflict(full, seen, at(2 + RETRY_AFTER_MS));
    expect(retry).toMatchObject({ kind: "take", warn: true, takes: { takes: MAX_TAKES + 1 } });
    expect(onConflict(retry.takes, seen, at(2 + RETRY_AFTER_MS + 15_000)).kind).toBe("yield");
  });

  it("starts a new count for another manager or another wanted value", () => {
    const full = (fight([0, 1, 2]).at(-1) as { takes: Takes }).takes;
    expect(onConflict(full, { ...seen, manager: "kustomize-controller" }, at(4))).toMatchObject({
      kind: "take",
      warn: false,
      takes: { takes: 1, manager: "kustomize-controller" },
    });
    expect(onConflict(full, { ...seen, ours: "DB_POSTGRES_MAX_CONN=30" }, at(4)).kind).toBe("take");
  });

  it("leaves a yielded Deployment alone without a request while nothing changed and no retry is due", () => {
    const full = (fight([0, 1, 2]).at(-1) as { takes: Takes }).takes;
    expect(stillYielded(full, seen, at(10))).toBe(true);
    expect(stillYielded(full, { ...seen, theirs: "DB_POSTGRES_MAX_CONN=60" }, at(10))).toBe(false);
    expect(stillYielded(full, seen, at(2 + RETRY_AFTER_MS))).toBe(false);
    expect(stillYielded((fight([0])[0] as { takes: Takes }).takes, seen, at(10))).toBe(false);
  });

  it("shows a fight on a Deployment that holds our values while its last take is within the window", () => {
    const record = (fight([0])[0] as { takes: Takes }).takes;
    expect(recentFight(record, at(TAKE_WINDOW_MS))).toBe(true);
    expect(recentFight(record, at(TAKE_WINDOW_MS + 1))).toBe(false);
    expect(recentFight(undefined, at(0))).toBe(false);
  });
});

describe("the record on the Deployment", () => {
  const withAnnotations = (annotations: Record<string, string>): V1Deployment => ({ metadata: { annotations } });

  it("reads back what a take writes", () => {
    const record = (fight([0])[0] as { takes: Takes }).takes;
    expect(takesOf(withAnnotations(takesAnnotation(record)))).toEqual(record);
  });

  it("is no record when absent or edited into something else", () => {
    expect(takesOf({ metadata: {} })).toBeUndefined();
    expect(takesOf(withAnnotations({ [TAKES_ANNOTATION]: "three" }))).toBeUndefined();
    expect(takesOf(withAnnotations({ [TAKES_ANNOTATION]: '{"takes":"3"}' }))).toBeUndefined();
  });
});

describe("conflictingManagers: who a failed server-side apply names", () => {
  const conflict = (body: unknown) => Object.assign(new Error("HTTP 409"), { code: 409, body });
  const status = {
    kind: "Status",
    reason: "Conflict",
    code: 409,
    // As kube-apiserver v1.35 answers (an Apply manager has no "using apps/v1").
    message: 'Apply failed with 3 conflicts: conflict with "argocd-controller" using apps/v1: .spec…',
    details: {
      causes: [
        {
          reason: "FieldManagerConflict",
          message: 'conflict with "argocd-controller" using apps/v1',
          field: '.spec.template.spec.containers[name="app"].env[name="DB_POSTGRES_MAX_CONN"].value',
        },
        {
          reason: "FieldManagerConflict",
          message: 'conflict with "argocd-controller" using apps/v1',
          field: '.spec.template.spec.containers[name="app"].env[name="DB_POSTGRES_MIN_CONN"].value',
        },
        { reason: "FieldManagerConflict", message: 'conflict with "kubectl-edit"', field: ".x" },
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
