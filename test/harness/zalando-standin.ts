/**
 * The Zalando postgres-operator stand-in: what Zalando's operator and Patroni do with a
 * `postgresql` (acid.zalan.do/v1) where it matters to us, for one resource bound to one local
 * PostgreSQL server.
 *
 * The real operator runs Spilo pods (PostgreSQL under Patroni) and talks to Patroni's REST API
 * inside them, which needs a real node; our control plane runs kwok and our PostgreSQL is a local
 * process. So this stand-in follows the resource (a GET every pollMs, as the pod bridge follows
 * its pods) and, when spec.postgresql.parameters.max_connections changes, does what the operator
 * (pkg/cluster: Update → syncPatroniConfig → restartInstances, v1.14.0) and Patroni do:
 *
 * - status.PostgresClusterStatus "Updating" (the operator's Update sets it first);
 * - the parameter patched into Patroni's dynamic configuration; Patroni passes max_connections on
 *   the postgres command line, so nothing changes in the running server: Patroni reports the
 *   member's restart as pending (recorded here as the event "pending-restart");
 * - the restart of the pending member through Patroni (a fast shutdown, then the postmaster
 *   started with the new `-c max_connections=…`); with one member there is no order to keep
 *   (with several, the operator restarts the primary first when the value goes down);
 * - status.PostgresClusterStatus "Running" (or "UpdateFailed" had the restart failed).
 *
 * The server must be created with max_connections on its command line (patroniCommandLine()
 * below), as Patroni starts it: that is what makes ALTER SYSTEM useless there.
 */
import { CustomObjectsApi, type KubeConfig, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { ZALANDO, ZALANDO_RUNNING, type ZalandoPostgresql } from "../../src/kube/workloads.js";
import type { PostgresServer } from "./postgres.js";

export const ZALANDO_UPDATING = "Updating";

/** The command-line settings of a server Patroni started with max_connections = value. */
export function patroniCommandLine(maxConnections: number | string): Record<string, string> {
  return { max_connections: String(maxConnections) };
}

export interface ZalandoStandInEvent {
  at: Date;
  action: "adopted" | "pending-restart" | "restarted";
  maxConnections: string | undefined;
}

export class ZalandoStandIn {
  /** What the stand-in did, in order: tests assert on it. */
  readonly events: ZalandoStandInEvent[] = [];
  /** The PostgresClusterStatus values it reported, in order. */
  readonly statuses: string[] = [];
  private readonly custom: CustomObjectsApi;
  private applied: string | undefined;
  private adopted = false;
  private running = false;
  private loop?: Promise<void>;
  /** A failed step of the loop: the test's next assertion fails with it instead of timing out. */
  failure?: Error;

  constructor(
    kc: KubeConfig,
    private readonly namespace: string,
    private readonly name: string,
    private readonly server: PostgresServer,
    /** The value Patroni started the server with when the manifest names none (Spilo picks one). */
    private readonly startedWith: string,
    private readonly pollMs = 200,
  ) {
    this.custom = kc.makeApiClient(CustomObjectsApi);
  }

  get restarts(): number {
    return this.events.filter((e) => e.action === "restarted").length;
  }

  start(): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        try {
          await this.step();
        } catch (err) {
          this.failure = err as Error;
          this.running = false;
          return;
        }
        await new Promise((r) => setTimeout(r, this.pollMs));
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async step(): Promise<void> {
    const pg = (await this.custom.getNamespacedCustomObject({
      ...ZALANDO,
      namespace: this.namespace,
      name: this.name,
    })) as ZalandoPostgresql;
    const wanted = pg.spec?.postgresql?.parameters?.max_connections ?? this.startedWith;
    if (!this.adopted) {
      // The resource as found is what the server already runs: no restart.
      this.applied = wanted;
      this.adopted = true;
      this.events.push({ at: new Date(), action: "adopted", maxConnections: wanted });
      await this.report(ZALANDO_RUNNING);
      return;
    }
    if (wanted === this.applied) return;
    await this.report(ZALANDO_UPDATING);
    // Patroni holds the new value; the running postmaster still has the old one on its command
    // line. As restartInstance does: a restart only when Patroni reports it pending.
    this.server.setCommandLine(patroniCommandLine(wanted));
    if ((await this.server.setting("max_connections")) !== wanted) {
      this.events.push({ at: new Date(), action: "pending-restart", maxConnections: wanted });
      await this.server.restart("fast");
      this.events.push({ at: new Date(), action: "restarted", maxConnections: wanted });
    }
    this.applied = wanted;
    await this.report(ZALANDO_RUNNING);
  }

  /** As the operator writes it: the status subresource, one key. */
  async report(status: string): Promise<void> {
    await this.custom.patchNamespacedCustomObjectStatus(
      { ...ZALANDO, namespace: this.namespace, name: this.name, body: { status: { PostgresClusterStatus: status } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    this.statuses.push(status);
  }
}
