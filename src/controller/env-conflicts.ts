/**
 * When another field manager keeps setting the pool env a policy owns: a GitOps tool whose
 * manifest says DB_POSTGRES_MAX_CONN=50 while the policy says 25, with self-heal on. Each side
 * overwrites the other, and every overwrite rolls the application out again, forever.
 *
 * The operator takes the entries back (a forced server-side apply) at most MAX_TAKES times
 * within TAKE_WINDOW_MS of the first take, then leaves the other manager's value in place and
 * reports ConflictingManager: the fight costs at most MAX_TAKES rollouts, not 8 a minute.
 * RETRY_AFTER_MS after the last take it takes them back once more, so that a conflict resolved
 * on the other side (the tool now ignores the variable) heals by itself; a tool still fighting
 * gets its value back at once, so an unresolved conflict costs one rollout an hour.
 *
 * Who: a server-side apply without force fails with 409 and names the managers that own the
 * fields it would change; the operator applies without force first and forces only to take a
 * field back. So the happy path costs no extra request, and the watch caches, which drop
 * managedFields, need not keep them.
 *
 * Where the count lives: in an annotation of the Deployment (TAKES_ANNOTATION), written by the
 * forced apply that takes the entries back, with the policy's field manager. So it costs no
 * write of its own, it survives an operator restart, and it cannot lag: the overwrite that
 * triggers the next pass comes after our take in the Deployment's watch, so the Deployment that
 * shows the overwrite also shows the count. (Kept in the policy's status instead, a pass that
 * read the policy before our status write landed wrote the count back out.) An apply without
 * the annotation — the entries went in with no one to take them from — drops it: the fight is
 * over. The policy's status shows the record (status.targets[].conflict) for users.
 */
import type { V1Deployment, V1EnvVar } from "@kubernetes/client-node";

export const TAKES_ANNOTATION = "pooling.dbops.io/env-takes";

/** Takes within the window before the operator stops: the first (taking over a value a manifest set) and two more. */
export const MAX_TAKES = 3;
export const TAKE_WINDOW_MS = 10 * 60_000;
/** How long after its last take the operator leaves a yielded Deployment alone. */
export const RETRY_AFTER_MS = 60 * 60_000;

/** What the other manager set, and what the policy wants, for the entries they disagree on. */
export interface Disagreement {
  manager: string;
  /** "DB_POSTGRES_MAX_CONN=50", comma-separated when several. */
  theirs: string;
  /** "DB_POSTGRES_MAX_CONN=25" */
  ours: string;
}

/** The record of one fight, as the annotation holds it. */
export interface Takes extends Disagreement {
  takes: number;
  /** ISO time of this round's first take. */
  since: string;
  /** ISO time of the latest take. */
  last: string;
}

export type ConflictStep =
  /** Force the entries back, recording `takes`; `warn` when this is a repeat, worth a Warning Event. */
  | { kind: "take"; takes: Takes; warn: boolean }
  /** Leave their value; the record stays as the last take wrote it. */
  | { kind: "yield"; takes: Takes };

/** The next step when a non-forced apply found `seen.manager` holding entries the policy owns. */
export function onConflict(previous: Takes | undefined, seen: Disagreement, now: Date): ConflictStep {
  const at = now.toISOString();
  const fresh: Takes = { ...seen, takes: 1, since: at, last: at };
  if (!previous || previous.manager !== seen.manager || previous.ours !== seen.ours)
    return { kind: "take", takes: fresh, warn: false };
  const sinceLast = now.getTime() - Date.parse(previous.last);
  if (previous.takes >= MAX_TAKES) {
    if (sinceLast < RETRY_AFTER_MS) return { kind: "yield", takes: { ...previous, theirs: seen.theirs } };
    // One more take after the pause; if they set it again, the count is already full.
    return {
      kind: "take",
      takes: { ...previous, theirs: seen.theirs, takes: previous.takes + 1, last: at },
      warn: true,
    };
  }
  // Takes spread over more than the window are edits now and then, not a fight: count anew.
  if (now.getTime() - Date.parse(previous.since) > TAKE_WINDOW_MS) return { kind: "take", takes: fresh, warn: true };
  return { kind: "take", takes: { ...previous, theirs: seen.theirs, takes: previous.takes + 1, last: at }, warn: true };
}

/**
 * Whether a Deployment can be left as it is without asking the API server: the count is full, no
 * retry is due, and it still holds what the other manager set at the last take.
 */
export function stillYielded(
  previous: Takes | undefined,
  current: { theirs: string; ours: string },
  now: Date,
): boolean {
  return (
    previous !== undefined &&
    previous.takes >= MAX_TAKES &&
    now.getTime() - Date.parse(previous.last) < RETRY_AFTER_MS &&
    previous.theirs === current.theirs &&
    previous.ours === current.ours
  );
}

/** Whether a Deployment that holds the policy's values took part in a fight recently enough to show it. */
export function recentFight(takes: Takes | undefined, now: Date): boolean {
  return takes !== undefined && now.getTime() - Date.parse(takes.last) <= TAKE_WINDOW_MS;
}

/** When a yielded Deployment gets its next take. */
export function retryAt(takes: Takes): Date {
  return new Date(Date.parse(takes.last) + RETRY_AFTER_MS);
}

/** The record the annotation holds, or undefined when there is none (or it is not ours to read). */
export function takesOf(deployment: V1Deployment): Takes | undefined {
  const text = deployment.metadata?.annotations?.[TAKES_ANNOTATION];
  if (text === undefined) return undefined;
  try {
    const value = JSON.parse(text) as Partial<Takes>;
    const strings = [value.manager, value.theirs, value.ours, value.since, value.last];
    if (strings.every((s) => typeof s === "string") && Number.isInteger(value.takes)) return value as Takes;
  } catch {
    // Someone edited it by hand: no record, as after a deleted annotation.
  }
  return undefined;
}

export function takesAnnotation(takes: Takes): Record<string, string> {
  const { manager, theirs, ours, takes: count, since, last } = takes;
  return { [TAKES_ANNOTATION]: JSON.stringify({ manager, theirs, ours, takes: count, since, last }) };
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
  // A StatusCause's type is the JSON field "reason".
  const causes = (body as { details?: { causes?: { reason?: string; message?: string }[] } } | undefined)?.details
    ?.causes;
  const managers = (causes ?? [])
    .filter((c) => c.reason === "FieldManagerConflict")
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
      theirs.add(describeEntry(want.name, have));
      ours.add(`${want.name}=${want.value}`);
    }
  }
  return { theirs: [...theirs].join(", "), ours: [...ours].join(", ") };
}

function describeEntry(name: string, have: V1EnvVar | undefined): string {
  if (have === undefined) return `${name} unset`;
  return have.valueFrom ? `${name} from valueFrom` : `${name}=${have.value ?? ""}`;
}
