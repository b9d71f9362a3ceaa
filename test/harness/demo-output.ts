/**
 * What `make demo` prints, in both of its forms (kwok's simulated pods, test/harness/demo.ts;
 * real pods, test/e2e/demo.ts): a bold "==>" line per step, command output indented below it,
 * and the PoolPolicy watched until it converges.
 */
import { CustomObjectsApi, EventsV1Api, type KubeConfig } from "@kubernetes/client-node";

export const say = (text: string) => console.log(`\x1b[1m==>\x1b[0m ${text}`);
export const show = (text: string) => console.log(text.replace(/^/gm, "    "));

/**
 * Prints `kubectl get pp -n NAMESPACE ...` (with `getArgs`) and the policies' new Events whenever
 * they change, until `done` says so; throws after 5 minutes.
 */
export async function watchPolicyUntil(
  kc: KubeConfig,
  namespace: string,
  kubectl: (...args: string[]) => string | Promise<string>,
  done: () => Promise<boolean>,
  getArgs: string[] = [],
): Promise<void> {
  let lastTable = "";
  const seenEvents = new Set<string>();
  const events = kc.makeApiClient(EventsV1Api);
  const deadline = Date.now() + 300_000;
  while (Date.now() < deadline) {
    const table = await kubectl("get", "pp", "-n", namespace, ...getArgs);
    // Printed when something other than the AGE column changed (it changes every second).
    const comparable = table.replace(/\s\d+[smhd](\d+[smh])?(?=\s|$)/g, "");
    if (comparable !== lastTable) {
      say(["kubectl get pp -n", namespace, ...getArgs].join(" "));
      show(table.trimEnd());
      lastTable = comparable;
    }
    for (const e of (await events.listNamespacedEvent({ namespace })).items) {
      if (e.regarding?.kind !== "PoolPolicy" || seenEvents.has(e.metadata!.name!)) continue;
      seenEvents.add(e.metadata!.name!);
      show(`event ${e.type} ${e.reason}: ${e.note}`);
    }
    if (await done()) return;
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error("the PoolPolicy did not become Ready within 5 minutes");
}

/** Whether the PoolPolicy's Ready condition is True. */
export async function policyReady(kc: KubeConfig, namespace: string, name: string): Promise<boolean> {
  const p = (await kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
    group: "pooling.dbops.io",
    version: "v1alpha1",
    plural: "poolpolicies",
    namespace,
    name,
  })) as { status?: { conditions?: { type: string; status: string }[] } };
  return p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}
