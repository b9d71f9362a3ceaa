/**
 * What the group planner (max-connections.ts, topology.ts) reads: every pod of the PostgreSQL
 * StatefulSet asked for its role and settings, through the pod's own address.
 */
import type { V1Pod } from "@kubernetes/client-node";
import type { PostgresTarget } from "../postgres/connection.js";
import type { KubernetesPort, PostgresPort } from "./ports.js";
import type { PodState } from "./topology.js";
import type { WorkloadState } from "./workload.js";

export interface GroupMember {
  state: PodState;
  /** The operator's connection to this pod, when it has an address. */
  target?: PostgresTarget;
}

export async function readGroup(
  kube: Pick<KubernetesPort, "listPods">,
  postgres: Pick<PostgresPort, "inspectInstance">,
  workload: WorkloadState,
  serviceTarget: PostgresTarget,
): Promise<GroupMember[]> {
  const pods = (await kube.listPods(workload.namespace!, workload.podSelector)).filter(
    (p) => ordinalOf(p, workload.name!) !== undefined,
  );
  const members: GroupMember[] = [];
  for (let ordinal = 0; ordinal < (workload.replicas ?? 1); ordinal++) {
    const pod = pods.find((p) => ordinalOf(p, workload.name!) === ordinal);
    const name = `${workload.name}-${ordinal}`;
    if (!pod || pod.metadata?.deletionTimestamp || !isReady(pod) || !pod.status?.podIP) {
      members.push({ state: { name, ordinal, ready: false } });
      continue;
    }
    const target = { ...serviceTarget, host: pod.status.podIP };
    try {
      const facts = await postgres.inspectInstance(target);
      members.push({
        target,
        state: {
          name,
          ordinal,
          ready: true,
          role: facts.inRecovery ? "replica" : "primary",
          maxConnections: facts.maxConnections,
          alterSystemValue: facts.alterSystemValue,
          postmasterStartTime: facts.postmasterStartTime,
          lsn: facts.lsn,
        },
      });
    } catch {
      members.push({ state: { name, ordinal, ready: false }, target });
    }
  }
  return members;
}

function ordinalOf(pod: V1Pod, statefulSet: string): number | undefined {
  const match = pod.metadata?.name?.match(new RegExp(`^${statefulSet.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}-(\\d+)$`));
  return match ? Number(match[1]) : undefined;
}

function isReady(pod: V1Pod): boolean {
  return pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}
