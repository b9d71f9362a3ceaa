import { describe, expect, it } from "vitest";
import type { KubernetesObject } from "@kubernetes/client-node";
import { changesWhatReconcileReads } from "../../../src/runtime/predicates.js";

const policy = (metadata: KubernetesObject["metadata"], status?: unknown): KubernetesObject & { status?: unknown } => ({
  apiVersion: "pooling.dbops.io/v1alpha1",
  kind: "PoolPolicy",
  metadata: {
    name: "p",
    namespace: "ns",
    generation: 3,
    resourceVersion: "10",
    labels: { a: "1" },
    annotations: { x: "y" },
    finalizers: ["f"],
    ...metadata,
  },
  status,
});

describe("changesWhatReconcileReads", () => {
  it("ignores an update that changed only the status and the resourceVersion (our own status write)", () => {
    expect(
      changesWhatReconcileReads(
        policy({}, { observedGeneration: 2 }),
        policy({ resourceVersion: "11" }, { observedGeneration: 3 }),
      ),
    ).toBe(false);
  });

  it.each([
    ["the spec (generation)", { generation: 4 }],
    ["a label", { labels: { a: "2" } }],
    ["an annotation (manual approval)", { annotations: { x: "y", "pooling.dbops.io/approve-max-connections": "200" } }],
    ["the finalizers", { finalizers: [] }],
    ["the deletion timestamp", { deletionTimestamp: new Date("2026-11-27T00:00:00Z") }],
  ])("counts a change to %s", (_what, changed) => {
    expect(changesWhatReconcileReads(policy({}), policy({ resourceVersion: "11", ...changed }))).toBe(true);
  });

  it("treats missing and empty labels, annotations and finalizers alike", () => {
    const bare = policy({ labels: undefined, annotations: undefined, finalizers: undefined });
    expect(changesWhatReconcileReads(bare, policy({ labels: {}, annotations: {}, finalizers: [] }))).toBe(false);
  });
});
