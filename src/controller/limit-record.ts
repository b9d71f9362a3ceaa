/**
 * The record of the CONNECTION LIMIT a role had before a policy set one (issue 16.1), kept in an
 * annotation of the policy. Written before the first ALTER ROLE, so that a crash between the two
 * loses nothing; read when the policy is deleted, or stops naming the role, to restore the old
 * limit. An annotation and not the status: the status is rebuilt from what the operator sees
 * (a status restored from a backup without it, or lost, would lose the old limit for good), and
 * a person who must delete a policy whose server is gone can remove the record by hand.
 */
import { type CustomObjectsApi, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { GROUP, PLURAL, type PoolPolicy, VERSION } from "../api/schema.js";
import type { LimitRecord } from "../server/role-limits.js";

export const LIMIT_RECORD_ANNOTATION = `${GROUP}/connection-limit-before`;

/** The policy's record, if it holds a well-formed one. */
export function limitRecordOf(policy: Pick<PoolPolicy, "metadata">): LimitRecord | undefined {
  const text = policy.metadata.annotations?.[LIMIT_RECORD_ANNOTATION];
  if (!text) return undefined;
  try {
    const r = JSON.parse(text) as Partial<LimitRecord>;
    if (typeof r.role === "string" && Number.isSafeInteger(r.before) && (r.before as number) >= -1) {
      return { role: r.role, before: r.before as number };
    }
  } catch {
    // Not ours any more (edited by hand): treated as absent.
  }
  return undefined;
}

/** A JSON merge patch of this one annotation: nothing else of the policy is touched. */
export async function recordLimitBefore(
  custom: CustomObjectsApi,
  policy: PoolPolicy,
  record: LimitRecord | null,
): Promise<PoolPolicy> {
  const value = record ? JSON.stringify({ role: record.role, before: record.before }) : null;
  return (await custom.patchNamespacedCustomObject(
    {
      ...{ group: GROUP, version: VERSION, plural: PLURAL },
      namespace: policy.metadata.namespace,
      name: policy.metadata.name,
      body: { metadata: { annotations: { [LIMIT_RECORD_ANNOTATION]: value } } },
    },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  )) as PoolPolicy;
}
