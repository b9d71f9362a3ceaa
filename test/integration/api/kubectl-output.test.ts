/**
 * What a user reads with the real kubectl (issue 13, point 6): `kubectl describe pp` lists the
 * policy's Events in the order they happened, the action Events that must exist once included,
 * and `kubectl get pp -o wide` adds the server and the budget to the usual columns.
 */
import { execFile } from "node:child_process";
import { CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { createNamespace, deleteNamespace, loadKubeConfig } from "../../harness/kube.js";
import { toolPath } from "../../harness/tools.js";
import { EventRecorder, type EventInput } from "../../../src/runtime/events.js";
import type { PoolPolicy } from "../../../src/api/schema.js";
import { quietLogger } from "../runtime/support.js";

const api = { group: "pooling.dbops.io", version: "v1alpha1", plural: "poolpolicies" };
let kc: KubeConfig;
let kubeconfigPath: string;
let namespace: string;

beforeAll(async () => {
  kubeconfigPath = inject("kubeconfigPath");
  kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  namespace = await createNamespace(kc, "kubectl");
});

afterAll(async () => {
  await deleteNamespace(kc, namespace);
});

function kubectl(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(toolPath("kubectl"), ["--kubeconfig", kubeconfigPath, "-n", namespace, ...args], (err, stdout, stderr) =>
      err ? reject(new Error(`kubectl ${args.join(" ")}: ${stderr || err.message}`)) : resolve(stdout),
    );
  });
}

async function createPolicy(name: string): Promise<PoolPolicy> {
  return (await kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
    ...api,
    namespace,
    body: {
      apiVersion: "pooling.dbops.io/v1alpha1",
      kind: "PoolPolicy",
      metadata: { name },
      spec: {
        postgres: { host: "pg.db.svc", port: 6432, database: "app", credentialsSecret: { name: "pg-admin" } },
        targets: { selector: { matchLabels: { app: name } } },
      },
    },
  })) as PoolPolicy;
}

/** The reasons in the Events table of `kubectl describe`, top to bottom. */
function describedReasons(output: string): string[] {
  const table = output.slice(output.indexOf("Events:"));
  return table
    .split("\n")
    .slice(3) // "Events:", the header, the dashes
    .map((line) => line.trim().split(/\s+/)[1])
    .filter((reason): reason is string => reason !== undefined && reason !== "");
}

describe("kubectl describe pp", () => {
  it("lists the Events in the order they happened, an action's once-only Event among them", async () => {
    const policy = await createPolicy("story");
    const regarding = {
      apiVersion: policy.apiVersion,
      kind: policy.kind,
      name: policy.metadata.name,
      namespace,
      uid: policy.metadata.uid,
    };
    const event = (reason: string, name?: string): EventInput => ({
      regarding,
      type: "Normal",
      reason,
      action: "Test",
      note: `${reason} happened`,
      name,
    });
    const recorder = new EventRecorder(kc, { reportingInstance: "operator-0", logger: quietLogger });
    const altered = event("MaxConnectionsAltered", "story.alter-120-mgo4x1");
    // Within one second, as a pass writes them: describe's timestamps cannot order these.
    await recorder.record(event("BudgetExceeded"));
    await recorder.record(altered);
    await recorder.record(event("RestartInProgress"));
    await recorder.record(event("MaxConnectionsVerified", "story.verified-120-mgo4x1"));
    await recorder.record(event("Ready"));
    // The next operator process after a crash records the action again: nothing is added.
    await new EventRecorder(kc, { reportingInstance: "operator-1", logger: quietLogger }).record(altered);

    const expected = [
      "BudgetExceeded",
      "MaxConnectionsAltered",
      "RestartInProgress",
      "MaxConnectionsVerified",
      "Ready",
    ];
    expect(describedReasons(await kubectl("describe", "poolpolicy", "story"))).toEqual(expected);
    // `kubectl events` agrees.
    const events = await kubectl("events", "--for", "poolpolicy/story");
    expect(
      events
        .split("\n")
        .slice(1)
        .map((line) => expected.find((reason) => line.includes(` ${reason} `)))
        .filter((r) => r !== undefined),
    ).toEqual(expected);
  });
});

describe("kubectl get pp -o wide", () => {
  it("adds the server and the budget to the columns of kubectl get", async () => {
    await createPolicy("wide");
    await kc.makeApiClient(CustomObjectsApi).patchNamespacedCustomObjectStatus(
      {
        ...api,
        namespace,
        name: "wide",
        body: {
          status: { budget: { demand: 130, capacity: 200, reserve: 5, memoryCeiling: 180 }, targetsSummary: "2/2" },
        },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    // kubectl pads columns with spaces and prints an empty cell as nothing: cut each row at the
    // header's column starts.
    const table = (output: string) => {
      const [header, ...rows] = output.trimEnd().split("\n");
      const starts = [...header!.matchAll(/\S+/g)].map((m) => m.index);
      const cells = (line: string) => starts.map((at, i) => line.slice(at, starts[i + 1]).trim());
      return rows.map((row) => Object.fromEntries(cells(header!).map((name, i) => [name, cells(row)[i]])));
    };

    const [wide] = table(await kubectl("get", "pp", "wide", "-o", "wide"));
    expect(Object.keys(wide!)).toEqual([
      "NAME",
      "READY",
      "REASON",
      "MAXCONN",
      "USAGE",
      "TARGETS",
      "AGE",
      "HOST",
      "PORT",
      "DEMAND",
      "CAPACITY",
      "MEMCEILING",
      "ROLE",
      "ROLELIMIT",
    ]);
    expect(wide).toMatchObject({
      TARGETS: "2/2",
      HOST: "pg.db.svc",
      PORT: "6432",
      DEMAND: "130",
      CAPACITY: "200",
      MEMCEILING: "180",
    });

    const [plain] = table(await kubectl("get", "pp", "wide"));
    expect(Object.keys(plain!)).toEqual(["NAME", "READY", "REASON", "MAXCONN", "USAGE", "TARGETS", "AGE"]);
  });
});
