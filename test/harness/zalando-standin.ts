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
import type { KubeConfig } from "@kubernetes/client-node";
import { ZALANDO, ZALANDO_RUNNING, type ZalandoPostgresql } from "../../src/kube/workloads.js";
import { OwnerStandIn } from "./owner-standin.js";
import type { PostgresServer } from "./postgres.js";

export const ZALANDO_UPDATING = "Updating";

/** The command-line settings of a server Patroni started with max_connections = value. */
export function patroniCommandLine(maxConnections: number | string): Record<string, string> {
  return { max_connections: String(maxConnections) };
}

export class ZalandoStandIn extends OwnerStandIn<"pending-restart", ZalandoPostgresql> {
  /** The PostgresClusterStatus values it reported, in order. */
  readonly statuses: string[] = [];

  constructor(
    kc: KubeConfig,
    namespace: string,
    name: string,
    server: PostgresServer,
    /** The value Patroni started the server with when the manifest names none (Spilo picks one). */
    private readonly startedWith: string,
    pollMs = 200,
  ) {
    super(kc, ZALANDO, namespace, name, server, pollMs);
  }

  protected async step(pg: ZalandoPostgresql): Promise<void> {
    const wanted = pg.spec?.postgresql?.parameters?.max_connections ?? this.startedWith;
    if (!this.adopted) {
      // The resource as found is what the server already runs: no restart.
      this.applied = wanted;
      this.adopted = true;
      this.record("adopted", wanted);
      await this.report(ZALANDO_RUNNING);
      return;
    }
    if (wanted === this.applied) return;
    await this.report(ZALANDO_UPDATING);
    // Patroni holds the new value; the running postmaster still has the old one on its command
    // line. As restartInstance does: a restart only when Patroni reports it pending.
    this.server.setCommandLine(patroniCommandLine(wanted));
    if ((await this.server.setting("max_connections")) !== wanted) {
      this.record("pending-restart", wanted);
      await this.server.restart("fast");
      this.record("restarted", wanted);
    }
    this.applied = wanted;
    await this.report(ZALANDO_RUNNING);
  }

  /** As the operator writes it: the status subresource, one key. */
  async report(status: string): Promise<void> {
    await this.patchStatus({ PostgresClusterStatus: status });
    this.statuses.push(status);
  }
}
