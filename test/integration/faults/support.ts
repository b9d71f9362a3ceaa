/**
 * What every fault test file shares: `scenario(id, fn)` defines one test whose outcome and
 * measured numbers become a row of docs/reliability.md, and after which everything the
 * operator wrote is scanned for the test's secrets (item 11 of the issue: any hit fails the
 * scenario).
 *
 *   const suite = faultSuite("test/integration/faults/x.test.ts", () => cluster);
 *   suite.scenario("2a", async (m) => { …; m.note("takeover", `${s} s`); });
 *
 * Titles and promises come from the catalogue in test/harness/reliability-report.ts, so the
 * table and the test names say the same thing.
 */
import { afterAll, inject, it } from "vitest";
import { CATALOGUE, machineDescription, recordRow, runDir, writeReport } from "../../harness/reliability-report.js";
import { findSecrets, operatorVisibleOutput, type FaultCluster } from "../../harness/faults.js";

export interface Measurements {
  /** Adds "key value" to the row's Measured column. */
  note(key: string, value: string | number): void;
}

export interface FaultSuite {
  scenario(id: string, fn: (m: Measurements) => Promise<void>, timeoutMs?: number): void;
  /** Passwords, tokens and URLs with credentials that must never show up in what the operator writes. */
  secrets: Set<string>;
}

export function faultSuite(file: string, cluster: () => FaultCluster | undefined): FaultSuite {
  // The shared control plane's kubeconfig lives in a fresh temp dir per vitest run: a folder
  // that every test file of this run knows, no other run has, and the teardown removes.
  const rows = runDir(inject("kubeconfigPath"));
  const secrets = new Set<string>();

  afterAll(() => writeReport(rows));

  function scenario(id: string, fn: (m: Measurements) => Promise<void>, timeoutMs?: number): void {
    const entry = CATALOGUE.find((e) => e.id === id);
    if (!entry) throw new Error(`scenario ${id} is not in the catalogue of test/harness/reliability-report.ts`);
    it(
      `[${id}] ${entry.title}: ${entry.promise}`,
      async () => {
        const notes: string[] = [];
        const started = performance.now();
        let failure: unknown;
        try {
          await fn({ note: (key, value) => void notes.push(`${key} ${value}`) });
        } catch (err) {
          failure = err;
        }
        let hits: string[] = [];
        let scanned = false;
        const c = cluster();
        if (c) {
          try {
            hits = findSecrets(await operatorVisibleOutput(c), [...secrets, c.saToken]);
            scanned = true;
          } catch {
            // the control plane is down because the scenario failed mid-fault: nothing to scan
          }
        }
        const failureText = failure === undefined ? "" : ` — failed: ${firstLine(failure)}`;
        const leakText = hits.length > 0 ? ` — secrets leaked: ${hits.join(", ")}` : "";
        recordRow(rows, {
          id,
          title: entry.title,
          promise: entry.promise,
          outcome: failure === undefined && hits.length === 0 ? "pass" : "fail",
          details: `${notes.join("; ")}${failureText}${leakText}`,
          file,
          seconds: Math.round((performance.now() - started) / 1000),
          at: new Date().toISOString(),
          secretHits: scanned ? hits.length : undefined,
          machine: machineDescription(),
        });
        if (failure !== undefined) throw failure;
        if (hits.length > 0)
          throw new Error(`the operator's logs, Events or statuses hold secrets: ${hits.join(", ")}`);
      },
      timeoutMs,
    );
  }

  return { scenario, secrets };
}

function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split("\n")[0]!.slice(0, 300);
}
