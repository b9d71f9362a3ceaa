/**
 * Which PostgreSQL server a policy points at: the one definition of "the same server" that the
 * operator (budget, peers to re-enqueue, metrics labels) and the CLI share. Two copies of this
 * drifted before (one compared hosts case-sensitively, the other lower-cased).
 *
 * The key is host:port, with the host as DNS would resolve it from the policy's namespace:
 *   - case and a trailing dot do not matter ("PG.db." is "pg.db");
 *   - a single-label name is a Service of the policy's own namespace, so "postgres" in namespace
 *     "apps" is "postgres.apps.svc.cluster.local", and "postgres" in another namespace is another
 *     server (a pod resolves it through its namespace's search path);
 *   - "name.namespace.svc" gains the ".cluster.local" that the search path adds.
 * Other spellings of one server (a Service name and its ClusterIP, "name.namespace" and the full
 * name) are not recognised as one: write the same host in every policy of a server.
 *
 * Below, the same host read as a Kubernetes Service (serviceOfHost), and which Postgres
 * operator's resource runs the server behind that Service (ownerOfService): the discovery that
 * suggests the right spec.postgres.restart.workload (controller/discovery.ts).
 */
import { type OwnedKind, type PostgresOperator, POSTGRES_OPERATORS } from "../kube/workloads.js";

export type ServerKey = string & { readonly __serverKey: unique symbol };

const CLUSTER_DOMAIN = "cluster.local";
/** Single-label names that do not name a Service. */
const NOT_A_SERVICE = new Set(["localhost"]);

export function canonicalHost(host: string, namespace: string): string {
  const h = host.trim().toLowerCase().replace(/\.$/, "");
  if (h.includes(":")) return h; // an IPv6 address
  if (!h.includes(".") && !NOT_A_SERVICE.has(h)) return `${h}.${namespace}.svc.${CLUSTER_DOMAIN}`;
  if (/^[^.]+\.[^.]+\.svc$/.test(h)) return `${h}.${CLUSTER_DOMAIN}`;
  return h;
}

export function serverKey(postgres: { host: string; port: number }, namespace: string): ServerKey {
  return `${canonicalHost(postgres.host, namespace)}:${postgres.port}` as ServerKey;
}

/**
 * The Service a policy's host names, as a pod in the policy's namespace resolves it: a single
 * label is a Service of that namespace, "name.namespace" and "name.namespace.svc[.cluster.local]"
 * a Service of that namespace (the search path's "svc.cluster.local" completes the first).
 * Undefined for an address or a longer outside name. "name.namespace" may also be an outside
 * domain ("example.com"): only a Service found under it counts (discovery reads it first).
 */
export function serviceOfHost(host: string, namespace: string): { name: string; namespace: string } | undefined {
  const canonical = canonicalHost(host, namespace);
  const label = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
  const full = canonical.match(new RegExp(`^(${label})\\.(${label})\\.svc\\.${CLUSTER_DOMAIN.replace(".", "\\.")}$`));
  if (full) return { name: full[1]!, namespace: full[3]! };
  const short = canonical.match(new RegExp(`^(${label})\\.(${label})$`));
  // Two numbers are no names: "10.0" is not a Service in namespace "0".
  if (short && !/^\d+$/.test(short[3]!)) return { name: short[1]!, namespace: short[3]! };
  return undefined;
}

/** What discovery reads of a Service: who made it (owner references) and its labels. */
export interface ServiceFacts {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  ownerReferences: { apiVersion: string; kind: string; name: string; controller?: boolean }[];
}

/** The resource of a Postgres operator that runs the server behind a Service, and how we know. */
export interface ServerOwner {
  operator: PostgresOperator;
  name: string;
  namespace: string;
  /** What on the Service says so: its owner reference, or the owner's labels. */
  evidence: string;
  /** The host names a Service of the replicas: the owner's Service of the primary, which a policy must name. */
  primaryService?: string;
}

/** CloudNativePG labels every object of a Cluster with its name (pkg/utils: ClusterLabelName). */
export const CNPG_CLUSTER_LABEL = "cnpg.io/cluster";
/**
 * Zalando's operator labels a cluster's Services with its default cluster_labels
 * (`application: spilo`) and cluster_name_label (`cluster-name`); both names are settings of
 * its configuration, and these are their defaults.
 */
export const ZALANDO_CLUSTER_LABEL = "cluster-name";
export const ZALANDO_APPLICATION_LABEL = { application: "spilo" } as const;

/**
 * Which Postgres operator's resource runs the server behind a Service: a controller owner
 * reference to a CloudNativePG Cluster or a Zalando postgresql (CloudNativePG always sets it;
 * Zalando's operator only with enable_owner_references), else their labels:
 *   - CloudNativePG: `cnpg.io/cluster: <cluster>` on its Services `<cluster>-rw` (the primary),
 *     `-ro` (the replicas) and `-r` (any instance);
 *   - Zalando: `application: spilo` and `cluster-name: <cluster>` on its Services `<cluster>`
 *     (the primary) and `<cluster>-repl` (the replicas).
 */
export function ownerOfService(service: ServiceFacts): ServerOwner | undefined {
  const found = ownedBy(service);
  if (!found) return undefined;
  const { kind, name, evidence } = found;
  const replicas =
    kind === "Cluster"
      ? [`${name}-ro`, `${name}-r`].includes(service.name) && `${name}-rw`
      : service.name === `${name}-repl` && name;
  const owner = { operator: POSTGRES_OPERATORS[kind], name, namespace: service.namespace, evidence };
  return replicas ? { ...owner, primaryService: replicas } : owner;
}

function ownedBy(service: ServiceFacts): { kind: OwnedKind; name: string; evidence: string } | undefined {
  for (const ref of service.ownerReferences) {
    const operator = Object.values(POSTGRES_OPERATORS).find(
      (o) => o.apiVersion === ref.apiVersion && o.kind === ref.kind,
    );
    if (operator && ref.controller) return { kind: operator.kind, name: ref.name, evidence: "its owner reference" };
  }
  const labels = service.labels;
  const cnpg = labels[CNPG_CLUSTER_LABEL];
  if (cnpg) return { kind: "Cluster", name: cnpg, evidence: `label ${CNPG_CLUSTER_LABEL}=${cnpg}` };
  const zalando = labels[ZALANDO_CLUSTER_LABEL];
  const spilo = Object.entries(ZALANDO_APPLICATION_LABEL).every(([k, v]) => labels[k] === v);
  if (zalando && spilo) {
    const evidence = `labels application=spilo, ${ZALANDO_CLUSTER_LABEL}=${zalando}`;
    return { kind: "postgresql", name: zalando, evidence };
  }
  return undefined;
}
