/**
 * The CloudNativePG stand-in: what CloudNativePG's operator does with a `Cluster` where it
 * matters to us, for one Cluster bound to one local PostgreSQL server.
 *
 * The real operator runs its instance manager inside the pods, which needs a real node; our
 * control plane runs kwok and our PostgreSQL is a local process. So this stand-in follows the
 * Cluster (a GET every pollMs, as the pod bridge follows its pods) and, when
 * spec.postgresql.parameters.max_connections changes, does what CloudNativePG does with a
 * parameter that needs a restart:
 *
 * - status.phase "Applying configuration" (CloudNativePG's phase for it), with a phaseReason;
 * - the parameter written into the server's custom.conf, a configuration file the server's
 *   postgresql.conf includes (CloudNativePG writes its parameters into its own custom.conf):
 *   a configuration-file setting, never ALTER SYSTEM;
 * - a reload, and, since max_connections is then pending a restart, a restart of the server;
 * - status.phase "Cluster in healthy state" again.
 *
 * The server must be created with `include_if_exists = 'custom.conf'` (customConf() below) and,
 * as CloudNativePG runs PostgreSQL 17+, `allow_alter_system = off`.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { KubeConfig } from "@kubernetes/client-node";
import { CNPG, CNPG_HEALTHY_PHASE, type CnpgCluster } from "../../src/kube/workloads.js";
import { OwnerStandIn } from "./owner-standin.js";
import type { PostgresServer } from "./postgres.js";

export const CNPG_APPLYING_PHASE = "Applying configuration";

/** The postgresql.conf settings of a server run as CloudNativePG runs it. */
export function cloudNativePgConf(): Record<string, string> {
  return { allow_alter_system: "off", include_if_exists: "'custom.conf'" };
}

export class CloudNativePgStandIn extends OwnerStandIn<never, CnpgCluster> {
  /** The phases it reported, in order. */
  readonly phases: string[] = [];

  constructor(kc: KubeConfig, namespace: string, clusterName: string, server: PostgresServer, pollMs = 200) {
    super(kc, CNPG, namespace, clusterName, server, pollMs);
  }

  protected async step(cluster: CnpgCluster): Promise<void> {
    const wanted = cluster.spec?.postgresql?.parameters?.max_connections;
    if (!this.adopted) {
      // The Cluster as found is what the server already runs: written, no restart.
      this.writeCustomConf(wanted);
      this.applied = wanted;
      this.adopted = true;
      this.record("adopted", wanted);
      await this.report(CNPG_HEALTHY_PHASE, "");
      return;
    }
    if (wanted === this.applied) return;
    await this.report(CNPG_APPLYING_PHASE, `Restarting instances to apply max_connections = ${wanted}`);
    this.writeCustomConf(wanted);
    await this.server.query("SELECT pg_reload_conf()");
    // As the instance manager does: a restart only when the reloaded file left a change pending.
    const pending = await this.server.query<{ pending: boolean }>(
      "SELECT pending_restart AS pending FROM pg_settings WHERE name = 'max_connections'",
    );
    if (pending[0]?.pending) {
      await this.server.restart("fast");
      this.record("restarted", wanted);
    }
    this.applied = wanted;
    await this.report(CNPG_HEALTHY_PHASE, "");
  }

  private writeCustomConf(maxConnections: string | undefined): void {
    const lines = ["# written by the CloudNativePG stand-in (test/harness/cnpg-standin.ts)"];
    if (maxConnections !== undefined) lines.push(`max_connections = '${maxConnections}'`);
    writeFileSync(join(this.server.dataDir, "custom.conf"), `${lines.join("\n")}\n`, { mode: 0o644 });
  }

  private async report(phase: string, phaseReason: string): Promise<void> {
    await this.patchStatus({ phase, phaseReason });
    this.phases.push(phase);
  }
}
