/**
 * The restart request of a StatefulSet (workload.ts), against a recording apps API: the one
 * merge patch that records the restart, and the partition it pins when the manifest leaves
 * spec.updateStrategy.rollingUpdate unset (why: requestRestart's comment; the double PostgreSQL
 * start the crash tests saw). The real StatefulSet controller is in the integration tests.
 */
import type { AppsV1Api, CustomObjectsApi, V1StatefulSet, V1StatefulSetUpdateStrategy } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { validateSpec } from "../../../src/api/schema.js";
import { readWorkload, requestRestart } from "../../../src/controller/workload.js";

function statefulSet(updateStrategy: V1StatefulSetUpdateStrategy | undefined): V1StatefulSet {
  return {
    metadata: { name: "postgres", namespace: "db", resourceVersion: "7" },
    spec: {
      serviceName: "postgres",
      replicas: 1,
      selector: { matchLabels: { app: "postgres" } },
      updateStrategy,
      template: { spec: { containers: [{ name: "postgres", image: "postgres:15" }] } },
    },
    status: { replicas: 1, observedGeneration: 1 },
  };
}

function clients(object: V1StatefulSet) {
  const patches: { spec?: { updateStrategy?: object; template?: object } }[] = [];
  const apps = {
    readNamespacedStatefulSet: async () => structuredClone(object),
    patchNamespacedStatefulSet: async (req: { body: (typeof patches)[number] }) => {
      patches.push(req.body);
      return object;
    },
  } as unknown as AppsV1Api;
  return { clients: { apps, custom: {} as CustomObjectsApi }, patches };
}

const parsed = validateSpec({
  postgres: { host: "pg", credentialsSecret: { name: "pg" }, restart: { workload: { name: "postgres" } } },
  targets: { selector: { matchLabels: { app: "api" } } },
});
if (!parsed.ok) throw new Error(parsed.message);
const restart = parsed.spec.postgres.restart;
const record = { value: 120, after: new Date("2026-12-01T10:00:00Z") };

describe("requestRestart of a StatefulSet", () => {
  it("pins partition 0 in the same patch when the manifest names no rollingUpdate", async () => {
    const { clients: c, patches } = clients(statefulSet({ type: "RollingUpdate" }));
    const workload = await readWorkload(c, restart, "db");
    expect(workload.partitionUnset).toBe(true);
    await requestRestart(c, workload, record, new Date("2026-12-01T10:00:01Z"));
    expect(patches).toHaveLength(1);
    expect(patches[0]!.spec?.updateStrategy).toEqual({ rollingUpdate: { partition: 0 } });
    expect(patches[0]!.spec?.template).toMatchObject({
      metadata: { annotations: { "pooling.dbops.io/restart-for-max-connections": expect.stringMatching(/^120@/) } },
    });
  });

  it.each([
    ["a partition already set", { type: "RollingUpdate", rollingUpdate: { partition: 0 } }],
    ["OnDelete", { type: "OnDelete" }],
  ])("leaves the update strategy alone with %s", async (_, strategy) => {
    const { clients: c, patches } = clients(statefulSet(strategy));
    const workload = await readWorkload(c, restart, "db");
    expect(workload.partitionUnset).toBe(false);
    await requestRestart(c, workload, record, new Date("2026-12-01T10:00:01Z"));
    expect(patches[0]!.spec?.updateStrategy).toBeUndefined();
  });
});
