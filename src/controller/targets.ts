/**
 * The env-injection step of a reconcile: make every Deployment the selector matches carry the
 * pool env (server-side apply, one field manager per policy), remove it from Deployments that
 * no longer match, and report each target as injected / rolled out.
 */
import type { AppsV1Api, V1Deployment } from "@kubernetes/client-node";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { PoolPolicySpec, PoolPolicyStatus } from "../api/schema.js";
import type { ConditionUpdate } from "./conditions.js";
import {
  desiredEnv,
  fieldManagerFor,
  injectionApplyConfig,
  isInjected,
  labelSelectorString,
  ownsFields,
  removalApplyConfig,
  selectContainers,
} from "./env-injection.js";
import { apiErrorMessage, isNotFound } from "./kube-errors.js";
import { deploymentRolledOut } from "./rollout.js";

export type TargetStatus = NonNullable<PoolPolicyStatus["targets"]>[number];

export interface TargetsOutcome {
  targets: TargetStatus[];
  summary: string;
  condition: Omit<ConditionUpdate, "type">;
  /** Human-readable actions taken, for Events. */
  actions: { reason: "EnvInjected" | "EnvRemoved" | "EnvInjectionFailed"; note: string; warning?: boolean }[];
  rollingOut: boolean;
}

const ssa = () => setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);

export async function applyPoolEnv(
  apps: AppsV1Api,
  policy: { name: string; namespace: string },
  spec: PoolPolicySpec,
  selected: readonly V1Deployment[],
  previousTargets: readonly TargetStatus[],
  options: { holdGrowthUntil?: number | false } = {},
): Promise<TargetsOutcome> {
  const manager = fieldManagerFor(policy.name);
  const env = desiredEnv(spec.pool);
  const envText = env.map((e) => `${e.name}=${e.value}`).join(", ");
  // By code point: a fixed order is all the status needs, and localeCompare's collator cost
  // several milliseconds of a policy's first pass.
  const matched = [...selected].sort((a, b) => byCodePoint(a.metadata!.name!, b.metadata!.name!));

  const outcome: TargetsOutcome = {
    targets: [],
    summary: "",
    condition: { status: "True", reason: "Injected", message: "" },
    actions: [],
    rollingOut: false,
  };
  const failures: string[] = [];
  const held: string[] = [];
  const injected: Array<{ name: string; containers: string[] }> = [];
  for (const deployment of matched) {
    const name = deployment.metadata!.name!;
    const containers = selectContainers(deployment, spec.targets.containers);
    if (containers.length === 0) {
      failures.push(`${name}: none of the containers ${spec.targets.containers.join(", ")} exists`);
      outcome.targets.push({ name, containers, injected: false, rolledOut: false });
      continue;
    }
    let current: V1Deployment = deployment;
    if (options.holdGrowthUntil && poolWouldGrow(deployment, containers, spec.pool)) {
      held.push(name);
      outcome.targets.push({ name, containers, injected: false, rolledOut: deploymentRolledOut(deployment) });
      continue;
    }
    if (!isInjected(deployment, containers, env)) {
      try {
        current = await apps.patchNamespacedDeployment(
          {
            name,
            namespace: policy.namespace,
            body: injectionApplyConfig(deployment, containers, env),
            fieldManager: manager,
            force: true,
          },
          ssa(),
        );
        injected.push({ name, containers });
      } catch (err) {
        failures.push(`${name}: ${apiErrorMessage(err)}`);
        outcome.actions.push({
          reason: "EnvInjectionFailed",
          note: `Deployment ${name}: ${apiErrorMessage(err)}`,
          warning: true,
        });
        outcome.targets.push({ name, containers, injected: false, rolledOut: false });
        continue;
      }
    }
    const rolledOut = deploymentRolledOut(current);
    outcome.rollingOut ||= !rolledOut;
    outcome.targets.push({ name, containers, injected: true, rolledOut });
  }

  // One Event per pass, not per Deployment: a policy over 1,000 Deployments would bury
  // everything else in `kubectl describe` (and cost 1,000 more API writes).
  if (injected.length > 0)
    outcome.actions.unshift({ reason: "EnvInjected", note: `Set ${envText} in ${describeInjected(injected)}` });

  const matchedNames = new Set(matched.map((d) => d.metadata!.name!));
  for (const gone of previousTargets.filter((t) => !matchedNames.has(t.name))) {
    try {
      if (await removePoolEnv(apps, gone.name, policy.namespace, manager)) {
        outcome.actions.push({
          reason: "EnvRemoved",
          note: `Removed the pool env from Deployment ${gone.name}: it no longer matches the selector`,
        });
      }
    } catch (err) {
      failures.push(`${gone.name}: removing the pool env failed: ${apiErrorMessage(err)}`);
      outcome.targets.push({ ...gone, injected: true, rolledOut: false }); // keep it: retried next time
    }
  }

  const ready = outcome.targets.filter((t) => t.injected && t.rolledOut).length;
  outcome.summary = `${ready}/${matched.length}`;
  if (failures.length > 0) {
    outcome.condition = { status: "False", reason: "ApplyFailed", message: failures.join("; ") };
  } else if (held.length > 0) {
    outcome.condition = {
      status: "False",
      reason: "WaitingForMaxConnections",
      message: `the pool max grows to ${spec.pool.maxSize} in ${held.join(", ")}: waiting until max_connections is raised to ${options.holdGrowthUntil} first`,
    };
  } else if (matched.length === 0) {
    outcome.condition = {
      status: "False",
      reason: "NoMatchingDeployments",
      message: `no Deployment in namespace ${policy.namespace} matches ${labelSelectorString(spec.targets.selector)}`,
    };
  } else if (outcome.rollingOut) {
    outcome.condition = {
      status: "False",
      reason: "RollingOut",
      message: `${envText} set in ${matched.length} Deployment(s); ${matched.length - ready} still rolling out`,
    };
  } else {
    outcome.condition = {
      status: "True",
      reason: "Injected",
      message: `${envText} in ${matched.length} Deployment(s), all rolled out`,
    };
  }
  return outcome;
}

function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** "Deployment api (containers: app)" or "3 Deployments: api, web, worker (containers: app)", the list cut at 10 names. */
export function describeInjected(injected: ReadonlyArray<{ name: string; containers: readonly string[] }>): string {
  const shown = 10;
  const containers = [...new Set(injected.flatMap((d) => d.containers))].sort().join(", ");
  if (injected.length === 1) return `Deployment ${injected[0]!.name} (containers: ${containers})`;
  const names = injected
    .slice(0, shown)
    .map((d) => d.name)
    .join(", ");
  const more = injected.length > shown ? ` and ${injected.length - shown} more` : "";
  return `${injected.length} Deployments: ${names}${more} (containers: ${containers})`;
}

/** Removes what this policy's field manager set in one Deployment; false when there was nothing. */
export async function removePoolEnv(
  apps: AppsV1Api,
  name: string,
  namespace: string,
  manager: string,
): Promise<boolean> {
  let deployment: V1Deployment;
  try {
    deployment = await apps.readNamespacedDeployment({ name, namespace });
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
  if (!ownsFields(deployment, manager)) return false;
  await apps.patchNamespacedDeployment(
    { name, namespace, body: removalApplyConfig(name, namespace), fieldManager: manager, force: true },
    ssa(),
  );
  return true;
}

/** Every Deployment of the namespace in which this policy's manager still owns fields. */
export async function deploymentsOwnedBy(apps: AppsV1Api, namespace: string, manager: string): Promise<string[]> {
  const all = await apps.listNamespacedDeployment({ namespace });
  return all.items.filter((d) => ownsFields(d, manager)).map((d) => d.metadata!.name!);
}

/**
 * Whether injecting would let the Deployment's pods open more connections than now: its
 * current pool max (our variable, if set) is below the new one, or unknown.
 */
export function poolWouldGrow(
  deployment: V1Deployment,
  containers: readonly string[],
  pool: PoolPolicySpec["pool"],
): boolean {
  const byName = new Map((deployment.spec?.template.spec?.containers ?? []).map((c) => [c.name, c]));
  return containers.some((name) => {
    const current = Number(byName.get(name)?.env?.find((e) => e.name === pool.env.max)?.value);
    return !Number.isFinite(current) || current < pool.maxSize;
  });
}
