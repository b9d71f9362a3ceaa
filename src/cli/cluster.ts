/**
 * What the CLI reads from the cluster, read-only: the PoolPolicy, its credentials, and the
 * inputs of the server's connection budget.
 *
 * The budget is per server, not per policy: every PoolPolicy whose spec.postgres points at the
 * same server (src/server/identity.ts) contributes its Deployments' pools. The arithmetic is the
 * operator's own (src/server/model.ts); only the reads differ: LISTs here, watch caches there.
 */
import { AppsV1Api, AutoscalingV2Api, CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { GROUP, PLURAL, VERSION, validateSpec, type PoolPolicy, type PoolPolicySpec } from "../api/schema.js";
import type { Budget, BudgetReserve } from "../budget/budget.js";
import { apiErrorMessage, isNotFound } from "../kube/errors.js";
import { readSecretKeys } from "../kube/secrets.js";
import { describeWorkload, readWorkloadObject, type WorkloadClients } from "../kube/workloads.js";
import { ConnectionReusingKubeConfig } from "../runtime/kube-config.js";
import type { ServerFacts } from "../postgres/inspect.js";
import { type PolicyTarget, type SecretReader, policyTarget as targetOfPolicy } from "../server/credentials.js";
import type { ServerKey } from "../server/identity.js";
import { containerMemory, postgresPodSpec } from "../server/memory.js";
import {
  gatherBudgetTargets,
  type PolicyOnServer,
  policiesOnServer,
  type ServerMemory,
  type ServerSettings,
  serverBudget,
  serverMemoryOfPeers,
  restartWorkloadRef,
  serverOfPolicy,
  serverReserve,
  serverSettings,
  type TargetReader,
} from "../server/model.js";

/** Raised for what stops the CLI before it can diagnose anything (exit code 2). */
export class CliError extends Error {}

export interface KubeOptions {
  kubeconfig?: string;
  context?: string;
}

export function loadKubeConfig(options: KubeOptions): KubeConfig {
  const kc = new ConnectionReusingKubeConfig();
  try {
    if (options.kubeconfig) kc.loadFromFile(options.kubeconfig);
    else kc.loadFromDefault();
    if (options.context) kc.setCurrentContext(options.context);
  } catch (err) {
    throw new CliError(`cannot load the kubeconfig: ${(err as Error).message}`);
  }
  if (!kc.getCurrentCluster()) throw new CliError("no cluster in the kubeconfig (set KUBECONFIG or pass --kubeconfig)");
  return kc;
}

/** The namespace of the kubeconfig's current context, as kubectl picks it. */
export function defaultNamespace(kc: KubeConfig): string {
  return kc.getContextObject(kc.getCurrentContext())?.namespace || "default";
}

/** "ns/name", or "name" with -n, or "name" in the context's namespace. */
export function parsePolicyRef(
  ref: string,
  namespace: string | undefined,
  kc: KubeConfig,
): { namespace: string; name: string } {
  const slash = ref.indexOf("/");
  if (slash >= 0) {
    const [ns, name] = [ref.slice(0, slash), ref.slice(slash + 1)];
    if (!ns || !name || name.includes("/"))
      throw new CliError(`invalid PoolPolicy reference "${ref}": expected NAMESPACE/NAME or NAME`);
    if (namespace && namespace !== ns)
      throw new CliError(`"${ref}" names namespace ${ns} but --namespace says ${namespace}`);
    return { namespace: ns, name };
  }
  return { namespace: namespace ?? defaultNamespace(kc), name: ref };
}

export interface LoadedPolicy {
  key: string;
  policy: PoolPolicy;
  spec: PoolPolicySpec;
}

export async function readPolicy(kc: KubeConfig, namespace: string, name: string): Promise<LoadedPolicy> {
  const custom = kc.makeApiClient(CustomObjectsApi);
  let policy: PoolPolicy;
  try {
    policy = (await custom.getNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      plural: PLURAL,
      namespace,
      name,
    })) as PoolPolicy;
  } catch (err) {
    if (isNotFound(err)) throw new CliError(`PoolPolicy ${namespace}/${name} not found`);
    throw new CliError(`cannot read PoolPolicy ${namespace}/${name}: ${apiErrorMessage(err)}`);
  }
  const validation = validateSpec(policy.spec);
  if (!validation.ok) throw new CliError(`PoolPolicy ${namespace}/${name} has an invalid spec: ${validation.message}`);
  return { key: `${namespace}/${name}`, policy, spec: validation.spec };
}

/** The policy's login from its Secret; `override` replaces host/port (e.g. through kubectl port-forward). */
export function policyTarget(
  kc: KubeConfig,
  loaded: LoadedPolicy,
  override: { host?: string; port?: number },
): Promise<PolicyTarget> {
  const core = kc.makeApiClient(CoreV1Api);
  const read: SecretReader = (namespace, name, keys) => readSecretKeys(core, namespace, name, keys);
  return targetOfPolicy(read, loaded.policy.metadata.namespace, loaded.spec, override);
}

/** The diagnosed policy's server as the operator sees it (src/server/model.ts), from LISTs. */
export interface ServerBudgetView {
  server: ServerKey;
  /** "ns/name" of every policy counted, the diagnosed one included. */
  policies: string[];
  /** Those policies with their specs: who names which role (server/role-limits.ts). */
  peers: PolicyOnServer[];
  settings: ServerSettings;
  reserve: BudgetReserve;
  budget: Budget;
  /** The memory ceiling, from the workload a policy of the server names (as the operator reads it). */
  memory: ServerMemory;
  /** Things the reader should know about how complete the numbers are. */
  notes: string[];
}

/** Every policy, Deployment and HPA that adds to the demand on the diagnosed policy's server. */
export async function readServerBudget(
  kc: KubeConfig,
  diagnosed: LoadedPolicy,
  facts: ServerFacts,
): Promise<ServerBudgetView> {
  const notes: string[] = [];
  const namespace = diagnosed.policy.metadata.namespace;
  const server = serverOfPolicy({ namespace, spec: diagnosed.spec });
  const peers = policiesOnServer(await listPolicies(kc, namespace, notes), server);
  // The diagnosed policy is always counted, even where listing did not return it.
  if (!peers.some((p) => p.key === diagnosed.key)) peers.push({ key: diagnosed.key, namespace, spec: diagnosed.spec });

  const apps = kc.makeApiClient(AppsV1Api);
  const autoscaling = kc.makeApiClient(AutoscalingV2Api);
  const reader: TargetReader = {
    deployments: async (policyKey, ns, labelSelector) => {
      try {
        return (await apps.listNamespacedDeployment({ namespace: ns, labelSelector })).items;
      } catch (err) {
        notes.push(`Deployments of ${policyKey} not counted: ${apiErrorMessage(err)}`);
        return [];
      }
    },
    hpas: async (ns) => {
      try {
        return (await autoscaling.listNamespacedHorizontalPodAutoscaler({ namespace: ns })).items;
      } catch (err) {
        notes.push(`HPAs of namespace ${ns} not read (replicas used instead of maxReplicas): ${apiErrorMessage(err)}`);
        return [];
      }
    },
  };
  const settings = serverSettings(peers);
  const budget = serverBudget(await gatherBudgetTargets(reader, peers), facts, settings);
  return {
    server,
    policies: peers.map((p) => p.key),
    peers,
    settings,
    reserve: serverReserve(facts, settings),
    budget,
    memory: await readServerMemory({ apps, custom: kc.makeApiClient(CustomObjectsApi) }, peers, facts, settings),
    notes,
  };
}

/**
 * The operator's memory ceiling (src/server/model.ts): the same workload, read with a GET, and
 * the same container rule.
 */
function readServerMemory(
  clients: WorkloadClients,
  peers: readonly PolicyOnServer[],
  facts: ServerFacts,
  settings: ServerSettings,
): Promise<ServerMemory> {
  return serverMemoryOfPeers(peers, facts, settings, async (restart, policyNamespace) => {
    const ref = restartWorkloadRef(restart, policyNamespace);
    const description = describeWorkload(ref);
    try {
      const object = await readWorkloadObject(clients, ref);
      return { found: true, description, memory: containerMemory(postgresPodSpec(object), description) };
    } catch (err) {
      if (isNotFound(err)) return { found: false, description };
      throw err;
    }
  });
}

/** Cluster-wide when allowed; else the diagnosed policy's namespace only, and a note saying so. */
async function listPolicies(kc: KubeConfig, namespace: string, notes: string[]): Promise<PoolPolicy[]> {
  const custom = kc.makeApiClient(CustomObjectsApi);
  let items: PoolPolicy[];
  try {
    items = (
      (await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })) as {
        items: PoolPolicy[];
      }
    ).items;
  } catch (err) {
    try {
      items = (
        (await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace })) as {
          items: PoolPolicy[];
        }
      ).items;
      notes.push(
        `only policies of namespace ${namespace} counted: cannot list PoolPolicies cluster-wide (${apiErrorMessage(err)})`,
      );
    } catch (nsErr) {
      notes.push(`only the diagnosed policy counted: cannot list PoolPolicies (${apiErrorMessage(nsErr)})`);
      items = [];
    }
  }
  for (const policy of items) {
    if (!policy.metadata.deletionTimestamp && !validateSpec(policy.spec).ok) {
      notes.push(`${policy.metadata.namespace}/${policy.metadata.name} not counted: invalid spec`);
    }
  }
  return items;
}
