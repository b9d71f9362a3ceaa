/**
 * Helpers of the CLI's integration tests.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * POOLPOLICY_CLI_SAMPLES=<dir> keeps the CLI's real outputs from the integration tests: the
 * samples shown in docs/operations.md come from there, not from an editor.
 */
export function saveSample(name: string, text: string): void {
  if (process.env.POOLPOLICY_CLI_SAMPLES) writeFileSync(join(process.env.POOLPOLICY_CLI_SAMPLES, name), text);
}
