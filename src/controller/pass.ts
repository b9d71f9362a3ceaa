/**
 * One reconcile pass of one policy, and the shape every step of it has.
 *
 * A pass is a fold over steps (reconciler.ts): each step reads the pass (the validated spec and
 * what earlier steps learned, e.g. the server's facts) and returns a StepOutcome: the conditions
 * it decides, the Events that tell what it did, the status fields it owns, and how soon it wants
 * the pass to come back. The reconciler merges the outcomes, writes the status once, and asks to
 * come back at the soonest time any step wanted.
 */
import type { PoolPolicy, PoolPolicySpec, PoolPolicyStatus } from "../api/schema.js";
import type { SpecDurations } from "../api/spec-durations.js";
import type { Budget } from "../budget/budget.js";
import type { Logger } from "../log.js";
import type { ServerFacts } from "../postgres/inspect.js";
import type { PolicyTarget } from "../server/credentials.js";
import type { ServerKey } from "../server/identity.js";
import type { PolicyOnServer, ServerDesire, ServerMemory, ServerSettings } from "../server/model.js";
import type { ConditionUpdate } from "./conditions.js";
import type { KubernetesPort } from "./ports.js";

export interface PolicyEvent {
  type: "Normal" | "Warning";
  reason: string;
  action: string;
  note: string;
  /** Set for actions that must have exactly one Event, even across a crash (see actionEventName). */
  name?: string;
}

/** The policy as one pass sees it: validated once, with what every step needs parsed. */
export interface Pass {
  key: string;
  policy: PoolPolicy;
  spec: PoolPolicySpec;
  /** The spec's durations in ms (specDurations): steps read these, never the spec's text. */
  durations: SpecDurations;
  /** spec.targets.selector as the API server's labelSelector parameter. */
  selector: string;
  server: ServerKey;
  /** The freshest status known (see PoolPolicyReconciler.freshestStatus). */
  previous: PoolPolicyStatus;
  now: Date;
  log: Logger;
  /** Emits Events at once: actions announce themselves before they act (crash-safe). */
  announce(events: readonly PolicyEvent[]): Promise<void>;
  /**
   * A restart workload, read at most once per pass: the memory ceiling and the max_connections
   * step both need it, and it is a GET.
   */
  readWorkload: KubernetesPort["readWorkload"];
}

/** What the PostgreSQL step learned, for the steps after it. */
export interface ServerView {
  /** Every policy on the server, this one included, sorted by key. */
  peers: PolicyOnServer[];
  connection: PolicyTarget;
  facts: ServerFacts | undefined;
  budget: Budget | undefined;
  /** The max_connections this policy asks for (unmanaged when its spec sets none: desireOfPolicy). */
  desired: ServerDesire;
  /** What the policies of the server ask for together: the same whichever of them is reconciled. */
  serverDesired: ServerDesire;
  /** The server's memory ceiling (undefined while its facts are unknown). */
  memory: ServerMemory | undefined;
  settings: ServerSettings;
  /** max_connections is sized by "auto" (no policy of the server gives a number): spec.budget.ceiling bounds it. */
  autoSized: boolean;
}

export interface StepOutcome {
  conditions: ConditionUpdate[];
  /** Events of what the step did, emitted before the status is written. */
  events: PolicyEvent[];
  /** The status fields this step owns. */
  status: Partial<PoolPolicyStatus>;
  /** Come back within this many ms; Infinity: no wish of this step's own. */
  requeueAfterMs: number;
}

export function outcome(o: Partial<StepOutcome>): StepOutcome {
  return { conditions: [], events: [], status: {}, requeueAfterMs: Number.POSITIVE_INFINITY, ...o };
}

/** The fold: conditions and events in step order, status fields merged, the soonest requeue. */
export function combine(outcomes: readonly StepOutcome[]): StepOutcome {
  return outcomes.reduce(
    (all, o) => ({
      conditions: [...all.conditions, ...o.conditions],
      events: [...all.events, ...o.events],
      status: { ...all.status, ...o.status },
      requeueAfterMs: Math.min(all.requeueAfterMs, o.requeueAfterMs),
    }),
    outcome({}),
  );
}

/**
 * The name of the one Event of an action on a server: the policy, the action and the value,
 * and the postmaster start time it acted upon (the same action after a later restart is a new
 * one). Recorded again after a crash, the Event already exists and nothing is added.
 */
export function actionEventName(policy: PoolPolicy, action: string, postmasterStart: Date): string {
  return `${policy.metadata.name}.${action}-${postmasterStart.getTime().toString(36)}`.slice(0, 253);
}

/**
 * After a write refused because what we read is stale (a 409, a re-created object), come back
 * soon: by then the watch has most likely delivered the newer object.
 */
export const STALE_RETRY_MS = 250;

/** While something is moving (a rollout, a pod of a group restarting), poll it this often. */
export const PROGRESS_POLL_MS = 2_000;

/**
 * While PostgreSQL restarts, poll faster: nothing watched tells us it is back, and every poll
 * is one connection attempt. At 2 s, the restart benchmark saw the change verified about 2 s
 * after clients already had it (docs/benchmarks.md).
 */
export const RESTART_POLL_MS = 500;
