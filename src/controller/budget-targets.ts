/**
 * A server's budget targets (every Deployment of every policy on the server) gathered once and
 * reused by its policies' passes for as long as nothing they are made of has changed.
 *
 * Why: each pass of each policy gathered them anew, one peer after another, so the passes of
 * P policies on one server did P × P lookups (issue 13: start-up quadratic in the policies);
 * with 200 policies that was 10–20 ms of each pass, with 1,000 it would be five times as much
 * on five times as many passes.
 *
 * The rule: the targets gathered for a server are reused when
 *   - the set of its policies is the same in everything gathering reads of them (key,
 *     namespace, selector, pool max), and
 *   - the reader's version of the budget's inputs (target-watches.ts, budgetInputsVersion) is
 *     the same number it was before that gathering began: it changes with every Deployment
 *     added or deleted, every change of a Deployment's labels, replicas or strategy, and every
 *     HPA change in those namespaces.
 * A reader without a version (a namespace not watched or not synced yet, the tests' fakes)
 * gathers every time. What is reused is exactly what gathering would return: the server model
 * still decides on the set of policies and the server's facts alone.
 */
import type { BudgetTarget } from "../budget/budget.js";
import { labelSelectorString } from "../kube/selectors.js";
import type { ServerKey } from "../server/identity.js";
import { gatherBudgetTargets, type PolicyOnServer, type TargetReader } from "../server/model.js";

export interface VersionedTargetReader extends TargetReader {
  /** See TargetWatches.budgetInputsVersion; undefined: nothing may be reused. */
  budgetInputsVersion?(selections: Iterable<{ namespace: string; selector: string }>): number | undefined;
}

interface Gathered {
  version: number;
  peers: string;
  targets: readonly BudgetTarget[];
}

export class BudgetTargets {
  /** The last gathering per server (one entry per server ever reconciled: a few KiB each). */
  private readonly last = new Map<ServerKey, Gathered>();

  async gather(
    server: ServerKey,
    peers: readonly PolicyOnServer[],
    read: VersionedTargetReader,
  ): Promise<readonly BudgetTarget[]> {
    const selections = peers.map((p) => ({
      namespace: p.namespace,
      selector: labelSelectorString(p.spec.targets.selector),
    }));
    // Read before gathering: a change while gathering makes the next pass gather again.
    const version = read.budgetInputsVersion?.(selections);
    if (version === undefined) {
      this.last.delete(server);
      return gatherBudgetTargets(read, peers);
    }
    const signature = JSON.stringify(
      peers.map((p, i) => [p.key, selections[i]!.namespace, selections[i]!.selector, p.spec.pool.maxSize]),
    );
    const last = this.last.get(server);
    if (last && last.version === version && last.peers === signature) return last.targets;
    const targets = await gatherBudgetTargets(read, peers);
    this.last.set(server, { version, peers: signature, targets });
    return targets;
  }
}
