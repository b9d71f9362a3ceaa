import { EventsV1Api, type EventsV1Event, type KubeConfig, type V1ConfigMap } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createNamespace, deleteNamespace, loadKubeConfig } from "../../harness/kube.js";
import { EventRecorder, reportingController, type EventSubject } from "../../../src/runtime/events.js";
import { createConfigMap, quietLogger } from "./support.js";

describe("EventRecorder against a real kube-apiserver", () => {
  let kc: KubeConfig;
  let events: EventsV1Api;
  let namespace: string;

  beforeAll(async () => {
    kc = loadKubeConfig(inject("kubeconfigPath"));
    events = kc.makeApiClient(EventsV1Api);
    namespace = await createNamespace(kc, "events");
  });

  afterAll(async () => {
    await deleteNamespace(kc, namespace);
  });

  const subjectOf = (cm: V1ConfigMap): EventSubject => ({
    apiVersion: "v1",
    kind: "ConfigMap",
    name: cm.metadata!.name!,
    namespace: cm.metadata!.namespace!,
    uid: cm.metadata!.uid!,
  });

  async function eventsAbout(name: string): Promise<EventsV1Event[]> {
    const list = await events.listNamespacedEvent({ namespace });
    return list.items.filter((event) => event.regarding?.name === name);
  }

  it("writes an event that can be listed back with its fields", async () => {
    const cm = await createConfigMap(kc, namespace, "subject");
    const recorder = new EventRecorder(kc, { reportingInstance: "operator-pod-0", logger: quietLogger });
    await recorder.record({
      regarding: subjectOf(cm),
      type: "Warning",
      reason: "MaxConnectionsTooLow",
      action: "Evaluate",
      note: "worst-case demand 420 exceeds max_connections 200",
    });

    const [event, ...others] = await eventsAbout("subject");
    expect(others).toHaveLength(0);
    expect(event).toMatchObject({
      type: "Warning",
      reason: "MaxConnectionsTooLow",
      action: "Evaluate",
      note: "worst-case demand 420 exceeds max_connections 200",
      reportingController,
      reportingInstance: "operator-pod-0",
      regarding: { kind: "ConfigMap", name: "subject", namespace, uid: cm.metadata!.uid, apiVersion: "v1" },
    });
    expect(reportingController).toBe("pooling.dbops.io/poolpolicy-operator");
    // eventTime is a MicroTime: six fractional digits on the wire.
    expect(String(event!.eventTime)).toMatch(/\.\d{6}Z$/);
  });

  it("truncates a long note to 1 KiB", async () => {
    const cm = await createConfigMap(kc, namespace, "long-note");
    const recorder = new EventRecorder(kc, { reportingInstance: "operator-pod-0", logger: quietLogger });
    await recorder.record({
      regarding: subjectOf(cm),
      type: "Normal",
      reason: "Verbose",
      action: "Report",
      note: "x".repeat(5_000),
    });
    const [event] = await eventsAbout("long-note");
    expect(event?.note).toHaveLength(1024);
  });

  it("collapses identical events into one with a series", async () => {
    const cm = await createConfigMap(kc, namespace, "repeated");
    const recorder = new EventRecorder(kc, { reportingInstance: "operator-pod-0", logger: quietLogger });
    const input = {
      regarding: subjectOf(cm),
      type: "Warning" as const,
      reason: "CannotApply",
      action: "AlterSystem",
      note: "set on the command line",
    };
    for (let i = 0; i < 3; i++) await recorder.record(input);
    await recorder.record({ ...input, note: "a different note is a different event" });

    const recorded = await eventsAbout("repeated");
    expect(recorded).toHaveLength(2);
    const repeated = recorded.find((event) => event.note === "set on the command line");
    expect(repeated?.series?.count).toBe(3);
    expect(String(repeated?.series?.lastObservedTime)).toMatch(/\.\d{6}Z$/);
  });

  it("keeps the order Events were recorded in when they are written in parallel", async () => {
    const cm = await createConfigMap(kc, namespace, "parallel");
    const recorder = new EventRecorder(kc, { reportingInstance: "operator-pod-0", logger: quietLogger });
    const event = (reason: string, name?: string) => ({
      regarding: subjectOf(cm),
      type: "Normal" as const,
      reason,
      action: "Reconcile",
      note: reason,
      name,
    });
    // The first one looks itself up before it is written (one Event per key): its request goes
    // out after the others', and its name must still sort first.
    await Promise.all([
      recorder.record(event("MaxConnectionsAltered", "parallel/alter/1")),
      recorder.record(event("EnvInjected")),
      recorder.record(event("RollingOut")),
    ]);
    const byName = (await eventsAbout("parallel")).sort((a, b) =>
      a.metadata!.name! < b.metadata!.name! ? -1 : a.metadata!.name! > b.metadata!.name! ? 1 : 0,
    );
    expect(byName.map((e) => e.reason)).toEqual(["MaxConnectionsAltered", "EnvInjected", "RollingOut"]);
    const times = byName.map((e) => new Date(String(e.eventTime)).getTime());
    expect([...times].sort((a, b) => a - b)).toEqual(times);
  });

  it("never throws, even when the API refuses the event", async () => {
    const recorder = new EventRecorder(kc, { reportingInstance: "operator-pod-0", logger: quietLogger });
    await expect(
      recorder.record({
        regarding: { apiVersion: "v1", kind: "ConfigMap", name: "ghost", namespace: "no-such-namespace-xyz" },
        type: "Normal",
        reason: "Nothing",
        action: "Nothing",
      }),
    ).resolves.toBeUndefined();
  });
});
