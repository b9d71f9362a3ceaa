/**
 * The pooler's share of the server (issue 17), as the PoolerSized condition of every policy
 * that takes part in a pooler: the one declaring it, and those whose spec.pool.via is Pooler.
 * Policies that have nothing to do with a pooler get no such condition (and lose a stale one),
 * so that servers without a pooler read exactly as before.
 *
 * What it does NOT do yet: run the pooler. The sizes are computed and reported; no Deployment,
 * Service or config is applied and no env is injected (docs/pooler.md). The condition's
 * message says so, so that "Sized" is never read as "running".
 *
 * The max_connections the pooler is sized against is the lower of the value in force and the
 * value the policies ask for: a pooler sized for a raise not yet applied would exceed the
 * server until the restart, and one sized for the current value would exceed it after a lowering.
 */
import { poolerPlanInput, poolerProblem, serverPooler } from "../server/pooler.js";
import { explainSizing, planPooler } from "../server/pooler-plan.js";
import type { ConditionUpdate } from "./conditions.js";
import type { Pass, ServerView } from "./pass.js";

export const POOLER_CONDITION = "PoolerSized" as const;

const NOT_RUN = "computed only: the operator does not run the pooler yet (docs/pooler.md)";

/** The PoolerSized condition of this policy, or undefined when it takes no part in a pooler. */
export function poolerCondition(
  pass: Pick<Pass, "key" | "spec" | "server">,
  view: ServerView,
): ConditionUpdate | undefined {
  const self = view.peers.find((p) => p.key === pass.key) ?? { key: pass.key, namespace: "", spec: pass.spec };
  const pooler = serverPooler(view.peers);
  if (pass.spec.pooler === undefined && pass.spec.pool.via !== "Pooler") return undefined;
  const type = POOLER_CONDITION;
  const problem = poolerProblem(self, pooler);
  if (problem) return { type, status: "False", ...problem };
  if (pooler.kind !== "declared") return undefined;
  if (!view.budget || !view.facts) {
    return {
      type,
      status: "Unknown",
      reason: "PostgresUnreachable",
      message:
        "cannot size the pooler: the server's max_connections and budget are not known (PostgreSQL is not reachable)",
    };
  }
  const inForce = view.facts.maxConnections;
  const maxConnections = view.desired.kind === "value" ? Math.min(inForce, view.desired.value) : inForce;
  const plan = planPooler(poolerPlanInput(pooler, view.budget, maxConnections), pass.server);
  const name = `pooler ${pooler.namespace}/${pooler.spec.name}`;
  if (plan.kind === "refused") {
    return { type, status: "False", reason: plan.reason, message: `${name} is not rolled out: ${plan.message}` };
  }
  return { type, status: "True", reason: "Sized", message: `${name}: ${explainSizing(plan)}; ${NOT_RUN}` };
}
