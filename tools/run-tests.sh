#!/usr/bin/env bash
# Runs the vitest projects given as arguments (default: all) and ends with one plain line
# "N passed, N failed, N skipped" that any CI log reader understands; exits non-zero on failure.
#
# Every temp file of the run (tests, the operator, PostgreSQL, the benchmarks' smoke run) goes
# to a folder of this run, not to the shared temp directory where other runs work too; at the
# end, a poolpolicy-* entry left in it fails the run: each test removes what it creates, also
# when it fails. POOLPOLICY_KEEP_TMP=1 keeps the folder (and skips the check) for debugging.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
results="$(mktemp)"
run_tmp="$(mktemp -d "${TMPDIR:-/tmp}/poolpolicy-test-run.XXXXXX")"
# PostgreSQL runs as the postgres account (initdb and postgres refuse root) in a folder inside.
chmod 1777 "$run_tmp"
cleanup() {
  rm -f "$results"
  if [[ -n "${POOLPOLICY_KEEP_TMP:-}" ]]; then echo "temp files of this run kept in $run_tmp"; else rm -rf "$run_tmp"; fi
}
trap cleanup EXIT

projects=()
for p in "$@"; do projects+=(--project "$p"); done
TMPDIR="$run_tmp" npx vitest run "${projects[@]}" --reporter=default --reporter=json --outputFile.json="$results"
status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
  if (r.numTotalTests === 0) { console.error("no test ran"); process.exit(1); }
' "$results" || status=1

if [[ -z "${POOLPOLICY_KEEP_TMP:-}" ]]; then
  leftovers="$(find "$run_tmp" -mindepth 1 -maxdepth 1 -name 'poolpolicy-*' -printf '  %f\n')"
  if [[ -n "$leftovers" ]]; then
    echo "the tests left these in the temp directory; the test that creates one must remove it:" >&2
    echo "$leftovers" >&2
    status=1
  fi
fi
exit "$status"
