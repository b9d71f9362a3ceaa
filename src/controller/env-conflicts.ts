/**
 * When another field manager keeps setting the pool env a policy owns: a GitOps tool whose
 * manifest says DB_POSTGRES_MAX_CONN=50 while the policy says 25, with self-heal on. Each side
 * overwrites the other, and every overwrite rolls the application out again, forever.
 *
 * The operator takes the entries back (a forced server-side apply) at most MAX_TAKES times
 * within TAKE_WINDOW_MS of the first take, then leaves the other manager's value in place and
 * reports ConflictingManager: the fight costs at most MAX_TAKES rollouts, not 8 a minute. After
 * RETRY_AFTER_MS it takes them back once more, so that a conflict resolved on the other side
 * (the tool now ignores the variable) heals by itself; a tool still fighting gets its value
 * back at once, so an unresolved conflict costs one rollout an hour.
 *
 * Who: a server-side apply without force fails with 409 and names the managers that own the
 * fields it would change; the operator applies without force first and forces only to take a
 * field back. So the happy path costs no extra request, and the watch caches, which drop
 * managedFields, need not keep them.
 *
 * Why the count lives in the policy's status (status.targets[].conflict): it is what an operator
 * restart reads back first, so a restart neither resets the count into a new fight nor needs a
 * write to the application's Deployment.
 */
import type { V1Deployment, V1EnvVar } from "@kubernetes/client-node";
import type { PoolPolicyStatus } from "../api/schema.js";

export type EnvConflict = NonNullable<NonNullable<PoolPolicyStatus["targets"]>[number]["conflict"]>;

/** Takes within the window before the operator stops: the first (taking over a value a manifest set) and two more. */
export const MAX_TAKES = 3;
export const TAKE_WINDOW_MS = 10 * 60_000;
/** How long a yielded Deployment is left alone before one more take. */
export const RETRY_AFTER_MS = 60 * 60_000;

/** What the other manager set, and what the policy wants, for the entries they disagree on. */
export interface Disagreement {
  manager: string;
  /** "DB_POSTGRES_MAX_CONN=50", comma-separated when several. */
  theirs: string;
  /** "DB_POSTGRES_MAX_CONN=25" */
  ours: string;
}

export type ConflictStep =
  /** Force the entries back; `warn` when this is a repeat, worth a Warning Event. */
  | { kind: "take"; conflict: EnvConflict; warn: boolean }
  /** Leave their value; `announce` the first time (the Warning Event of the stop). */
  | { kind: "yield"; conflict: EnvConflict; announce: boolean };

/** The next step when a non-forced apply found `seen.manager` holding entries the policy owns. */
export function onConflict(previous: EnvConflict | undefined, seen: Disagreement, now: Date): ConflictStep {
  const at = now.toISOString();
  const fresh = { ...seen, takes: 1, since: at };
  if (!previous || previous.manager !== seen.manager || previous.ours !== seen.ours)
    return { kind: "take", conflict: fresh, warn: false };
  if (previous.yieldedAt !== undefined) {
    if (now.getTime() - Date.parse(previous.yieldedAt) < RETRY_AFTER_MS)
      return { kind: "yield", conflict: { ...previous, theirs: seen.theirs }, announce: false };
    // One more take after the pause; if they set it again within the window, the count is full.
    const { yieldedAt: _ended, ...rest } = previous;
    return {
      kind: "take",
      conflict: { ...rest, theirs: seen.theirs, takes: previous.takes + 1, since: at },
      warn: true,
    };
  }
  // Takes spread over more than the window are edits now and then, not a fight: count anew.
  if (now.getTime() - Date.parse(previous.since) > TAKE_WINDOW_MS) return { kind: "take", conflict: fresh, warn: true };
  if (previous.takes >= MAX_TAKES)
    return { kind: "yield", conflict: { ...previous, theirs: seen.theirs, yieldedAt: at }, announce: true };
  return { kind: "take", conflict: { ...previous, theirs: seen.theirs, takes: previous.takes + 1 }, warn: true };
}

/**
 * Whether a yielded Deployment can be left as it is without asking the API server: it still
 * holds what the other manager set when the operator stopped, and no retry is due.
 */
export function stillYielded(previous: EnvConflict | undefined, theirs: string, ours: string, now: Date): boolean {
  return (
    previous?.yieldedAt !== undefined &&
    previous.theirs === theirs &&
    previous.ours === ours &&
    now.getTime() - Date.parse(previous.yieldedAt) < RETRY_AFTER_MS
  );
}

/**
 * What a Deployment that holds the policy's values keeps of its conflict record: the count of a
 * fight still inside its window (the next overwrite adds to it); nothing once the window passed
 * or after a yield ended with the policy's values in place (the other side gave up).
 */
export function carriedConflict(previous: EnvConflict | undefined, now: Date): EnvConflict | undefined {
  if (!previous || previous.yieldedAt !== undefined) return undefined;
  return now.getTime() - Date.parse(previous.since) <= TAKE_WINDOW_MS ? previous : undefined;
}

/** The field managers a 409 of a server-side apply names ("conflict with \"argocd-controller\" using apps/v1"). */
export function conflictingManagers(err: unknown): string[] | undefined {
  if ((err as { code?: unknown })?.code !== 409) return undefined;
  let body = (err as { body?: unknown }).body;
  if (typeof body === "string") {
    try {
      body = JSON.parse(body);
    } catch {
      return undefined;
    }
  }
  const causes = (body as { details?: { causes?: { type?: string; message?: string }[] } } | undefined)?.details
    ?.causes;
  const managers = (causes ?? [])
    .filter((c) => c.type === "FieldManagerConflict")
    .map((c) => /conflict with "([^"]+)"/.exec(c.message ?? "")?.[1])
    .filter((m): m is string => m !== undefined);
  return managers.length > 0 ? [...new Set(managers)] : undefined;
}

/** The entries of `env` whose value in the selected containers differs from the policy's, both sides. */
export function disagreement(
  deployment: V1Deployment,
  containers: readonly string[],
  env: readonly V1EnvVar[],
): { theirs: string; ours: string } {
  const byName = new Map((deployment.spec?.template.spec?.containers ?? []).map((c) => [c.name, c]));
  const theirs = new Set<string>();
  const ours = new Set<string>();
  for (const container of containers) {
    const current = byName.get(container)?.env ?? [];
    for (const want of env) {
      const have = current.find((e) => e.name === want.name);
      if (have && have.value === want.value && !have.valueFrom) continue;
      theirs.add(
        have === undefined
          ? `${want.name} unset`
          : have.valueFrom
            ? `${want.name} from valueFrom`
            : `${want.name}=${have.value ?? ""}`,
      );
      ours.add(`${want.name}=${want.value}`);
    }
  }
  return { theirs: [...theirs].join(", "), ours: [...ours].join(", ") };
}
