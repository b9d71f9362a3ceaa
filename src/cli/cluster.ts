/**
 * What the CLI reads from the cluster, read-only: the PoolPolicy, its credentials, and the
 * inputs of the server's connection budget.
 *
 * The budget is per server, not per policy: every PoolPolicy of the cluster whose
 * spec.postgres points at the same host:port contributes its Deployments' pools. Servers are
 * matched by the host text and port as written in the specs; two spellings of one server
 * (a Service name and its IP) are not recognised as the same.
 */
import {
  AppsV1Api,
  AutoscalingV2Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type V1Deployment,
} from "@kubernetes/client-node";
import {
  GROUP,
  MAX_CONNECTIONS_MAX,
  PLURAL,
  VERSION,
  validateSpec,
  type PoolPolicy,
  type PoolPolicySpec,
} from "../api/schema.js";
import type { BudgetReserve, BudgetTarget } from "../budget/budget.js";
import { labelSelectorString } from "../controller/env-injection.js";
import { apiErrorMessage, httpStatus } from "../controller/kube-errors.js";
import { readSecretKeys } from "../controller/secrets.js";
import { ConnectionReusingKubeConfig } from "../runtime/kube-config.js";
import { OPERATOR_POOL_SIZE, type PostgresTarget } from "../postgres/connection.js";
import type { ServerFacts } from "../postgres/inspect.js";

/** The operator's own connections to each server, counted in the reserve as the operator does. */
export const OPERATOR_CONNECTIONS = OPERATOR_POOL_SIZE;

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
    if (httpStatus(err) === 404) throw new CliError(`PoolPolicy ${namespace}/${name} not found`);
    throw new CliError(`cannot read PoolPolicy ${namespace}/${name}: ${apiErrorMessage(err)}`);
  }
  const validation = validateSpec(policy.spec);
  if (!validation.ok) throw new CliError(`PoolPolicy ${namespace}/${name} has an invalid spec: ${validation.message}`);
  return { key: `${namespace}/${name}`, policy, spec: validation.spec };
}

/** The policy's login from its Secret; `override` replaces host/port (e.g. through kubectl port-forward). */
export async function policyTarget(
  kc: KubeConfig,
  loaded: LoadedPolicy,
  override: { host?: string; port?: number },
): Promise<{ ok: true; target: PostgresTarget } | { ok: false; reason: string; message: string }> {
  const s = loaded.spec.postgres.credentialsSecret;
  const secret = await readSecretKeys(kc.makeApiClient(CoreV1Api), loaded.policy.metadata.namespace, s.name, [
    s.usernameKey,
    s.passwordKey,
  ]);
  if (!secret.ok) return secret;
  return {
    ok: true,
    target: {
      host: override.host ?? loaded.spec.postgres.host,
      port: override.port ?? loaded.spec.postgres.port,
      database: loaded.spec.postgres.database,
      sslMode: loaded.spec.postgres.sslMode,
      user: secret.values[s.usernameKey]!,
      password: secret.values[s.passwordKey]!,
    },
  };
}

/**
 * spec.budget ({ reserve, headroomPercent, ceiling }), read defensively: policies stored
 * before the field existed have none, and the CLI may be newer or older than the CRD.
 */
export function budgetSettings(spec: PoolPolicySpec): { reserve: number; headroomPercent: number; ceiling: number } {
  const b = (spec as { budget?: { reserve?: number; headroomPercent?: number; ceiling?: number } }).budget ?? {};
  return {
    reserve: b.reserve ?? 0,
    headroomPercent: b.headroomPercent ?? 20,
    ceiling: b.ceiling ?? MAX_CONNECTIONS_MAX,
  };
}

export interface BudgetInputs {
  /** "ns/name" of every policy counted, the diagnosed one included. */
  policies: string[];
  targets: BudgetTarget[];
  reserve: BudgetReserve;
  /** Things the reader should know about how complete the numbers are. */
  notes: string[];
}

/** Every policy, Deployment and HPA that adds to the demand on the diagnosed policy's server. */
export async function gatherBudgetInputs(
  kc: KubeConfig,
  diagnosed: LoadedPolicy,
  facts: ServerFacts,
): Promise<BudgetInputs> {
  const notes: string[] = [];
  const server = diagnosed.spec.postgres;
  const sameServer = (await listPolicies(kc, diagnosed.policy.metadata.namespace, notes)).filter(
    (p) => p.spec.postgres.host.toLowerCase() === server.host.toLowerCase() && p.spec.postgres.port === server.port,
  );
  // The diagnosed policy is always counted, even where listing did not return it.
  if (!sameServer.some((p) => p.key === diagnosed.key)) sameServer.push(diagnosed);
  sameServer.sort((a, b) => a.key.localeCompare(b.key));

  const apps = kc.makeApiClient(AppsV1Api);
  const autoscaling = kc.makeApiClient(AutoscalingV2Api);
  const hpaMaxByNamespace = new Map<string, Map<string, number>>();
  const targets: BudgetTarget[] = [];
  for (const p of sameServer) {
    const namespace = p.policy.metadata.namespace;
    let deployments: V1Deployment[];
    try {
      deployments = (
        await apps.listNamespacedDeployment({ namespace, labelSelector: labelSelectorString(p.spec.targets.selector) })
      ).items;
    } catch (err) {
      notes.push(`Deployments of ${p.key} not counted: ${apiErrorMessage(err)}`);
      continue;
    }
    if (!hpaMaxByNamespace.has(namespace))
      hpaMaxByNamespace.set(namespace, await hpaMaxReplicas(autoscaling, namespace, notes));
    const hpas = hpaMaxByNamespace.get(namespace)!;
    for (const d of deployments) {
      const name = d.metadata!.name!;
      targets.push({
        policy: p.key,
        deployment: `${namespace}/${name}`,
        poolMax: p.spec.pool.maxSize,
        replicas: d.spec?.replicas ?? 1,
        hpaMaxReplicas: hpas.get(name),
        strategy: d.spec?.strategy as BudgetTarget["strategy"],
      });
    }
  }
  return {
    policies: sameServer.map((p) => p.key),
    targets,
    reserve: {
      superuserReserved: facts.superuserReservedConnections,
      reserved: facts.reservedConnections,
      operator: OPERATOR_CONNECTIONS,
      // Policies of one server describe the same monitoring and backup connections: the largest
      // declared reserve counts once, not their sum.
      extra: Math.max(0, ...sameServer.map((p) => budgetSettings(p.spec).reserve)),
    },
    notes,
  };
}

/** Cluster-wide when allowed; else the diagnosed policy's namespace only, and a note saying so. */
async function listPolicies(kc: KubeConfig, namespace: string, notes: string[]): Promise<LoadedPolicy[]> {
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
  const loaded: LoadedPolicy[] = [];
  for (const policy of items) {
    const key = `${policy.metadata.namespace}/${policy.metadata.name}`;
    if (policy.metadata.deletionTimestamp) continue;
    const validation = validateSpec(policy.spec);
    if (!validation.ok) {
      notes.push(`${key} not counted: invalid spec`);
      continue;
    }
    loaded.push({ key, policy, spec: validation.spec });
  }
  return loaded;
}

/** maxReplicas of the autoscaling/v2 HPAs that scale a Deployment, by Deployment name. */
async function hpaMaxReplicas(
  autoscaling: AutoscalingV2Api,
  namespace: string,
  notes: string[],
): Promise<Map<string, number>> {
  const byDeployment = new Map<string, number>();
  try {
    for (const hpa of (await autoscaling.listNamespacedHorizontalPodAutoscaler({ namespace })).items) {
      const ref = hpa.spec?.scaleTargetRef;
      if (ref?.kind === "Deployment" && hpa.spec?.maxReplicas !== undefined)
        byDeployment.set(ref.name, hpa.spec.maxReplicas);
    }
  } catch (err) {
    notes.push(
      `HPAs of namespace ${namespace} not read (replicas used instead of maxReplicas): ${apiErrorMessage(err)}`,
    );
  }
  return byDeployment;
}
