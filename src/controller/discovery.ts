/**
 * Discovery (issue 18.3): when a policy's server is a Service of a Postgres operator, the
 * operator says which resource owns the server and suggests the `workload` that lets it change
 * max_connections there, instead of leaving the user with "ALTER SYSTEM is disabled" or "set on
 * the command line" and no way forward.
 *
 * Which Service the host names and which operator's resource is behind it are facts about the
 * server (server/identity.ts); here they are read through the Kubernetes port and turned into a
 * sentence for the MaxConnectionsApplied condition. The Service is read only when the message
 * can use it (the reasons in SUGGEST_ON) and before the first change of an operator's resource
 * (workloadMismatch), never on a converged pass.
 */
import { describeWorkload, type WorkloadRef } from "../kube/workloads.js";
import { type ServerOwner, ownerOfService, serviceOfHost } from "../server/identity.js";
import type { KubernetesPort } from "./ports.js";

/**
 * The MaxConnectionsApplied reasons whose message gains the suggestion: the server refuses or
 * ignores ALTER SYSTEM (the owner's doing), or the operator has no (existing) workload to restart.
 */
export const SUGGEST_ON: ReadonlySet<string> = new Set([
  "CommandLineOverride",
  "AlterSystemDisabled",
  "AlterSystemFailed",
  "PermissionDenied",
  "RestartRequired",
  "WorkloadNotFound",
  "VerificationFailed",
]);

/** The operator's resource that runs the server the policy's host names; undefined when none is known. */
export async function serverOwner(
  kube: KubernetesPort,
  host: string,
  policyNamespace: string,
): Promise<{ owner: ServerOwner; service: string } | undefined> {
  const ref = serviceOfHost(host, policyNamespace);
  if (!ref) return undefined;
  const service = await kube.readService(ref.namespace, ref.name);
  const owner = service && ownerOfService(service);
  return owner && { owner, service: `${ref.namespace}/${ref.name}` };
}

/** Whether the policy's workload already is the owner's resource (then there is nothing to suggest). */
export function isOwnerWorkload(owner: ServerOwner, workload: WorkloadRef | undefined): boolean {
  return (
    workload !== undefined &&
    workload.kind === owner.operator.kind &&
    workload.name === owner.name &&
    workload.namespace === owner.namespace
  );
}

/**
 * "Service db/pg-rw belongs to CloudNativePG Cluster db/pg (label cnpg.io/cluster=pg): set
 * spec.postgres.restart.workload to {…} …", plus the primary's Service when the host names the
 * replicas'.
 */
export function ownerSuggestion(found: { owner: ServerOwner; service: string }): string {
  const { owner, service } = found;
  const { operator } = owner;
  const resource = describeWorkload({ kind: operator.kind, name: owner.name, namespace: owner.namespace });
  const workload = `{apiVersion: ${operator.apiVersion}, kind: ${operator.kind}, name: ${owner.name}, namespace: ${owner.namespace}}`;
  const host = owner.primaryService
    ? `, and spec.postgres.host to ${owner.primaryService}.${owner.namespace} (the primary's Service; ${service} may reach a replica)`
    : "";
  return (
    `Service ${service} belongs to ${resource} (${owner.evidence}): set spec.postgres.restart.workload to ${workload}${host}; ` +
    `the operator then sets max_connections there and ${operator.name} restarts the instances ` +
    `(Helm chart: --set ${operator.chartValue}=true)`
  );
}
