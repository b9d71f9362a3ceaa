#!/usr/bin/env bash
# Runs vitest projects and ends with one plain line "N passed, N failed, N skipped" that any CI
# log reader understands; exits non-zero on failure.
#
#   run-tests.sh                  unit, the PostgreSQL matrix and integration, then the real-node story (e2e)
#   run-tests.sh unit integration the projects named, in one vitest run
#
# The e2e project runs in a vitest run of its own, after the others: its control plane listens on
# the real node's link and its node takes the whole machine's attention for about four minutes.
#
# Every temp file of the run (tests, the operator, PostgreSQL, the benchmarks' smoke run) goes
# to a folder of this run, not to the shared temp directory where other runs work too; at the
# end, a poolpolicy-* entry left in it fails the run: each test removes what it creates, also
# when it fails. POOLPOLICY_KEEP_TMP=1 keeps the folder (and skips the check) for debugging.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
results=()
status=0
run_tmp="$(mktemp -d "${TMPDIR:-/tmp}/poolpolicy-test-run.XXXXXX")"
# PostgreSQL runs as the postgres account (initdb and postgres refuse root) in a folder inside.
chmod 1777 "$run_tmp"
cleanup() {
  rm -f "${results[@]}"
  if [[ -n "${POOLPOLICY_KEEP_TMP:-}" ]]; then echo "temp files of this run kept in $run_tmp"; else rm -rf "$run_tmp"; fi
}
trap cleanup EXIT

# Runs one vitest invocation for the projects given; its JSON report is added to $results.
run_projects() {
  local out; out="$(mktemp)"
  local projects=()
  for p in "$@"; do projects+=(--project "$p"); done
  TMPDIR="$run_tmp" npx vitest run "${projects[@]}" --reporter=default --reporter=json --outputFile.json="$out" ||
    status=1
  results+=("$out")
}

if (($#)); then
  run_projects "$@"
else
  run_projects unit matrix integration
  run_projects e2e
fi
node -e '
  const fs = require("fs");
  let passed = 0, failed = 0, skipped = 0;
  for (const file of process.argv.slice(1)) {
    if (!fs.existsSync(file) || fs.statSync(file).size === 0) { console.error(`no report from a vitest run (${file})`); process.exit(1); }
    const r = JSON.parse(fs.readFileSync(file, "utf8"));
    passed += r.numPassedTests; failed += r.numFailedTests; skipped += r.numPendingTests + r.numTodoTests;
    if (r.numTotalTests === 0) { console.error(`no test ran (${file})`); process.exit(1); }
  }
  // A CI log is often read from its end: name every failed test there, with its first error line.
  for (const file of process.argv.slice(1)) {
    const r = JSON.parse(fs.readFileSync(file, "utf8"));
    for (const suite of r.testResults) {
      for (const t of suite.assertionResults.filter((a) => a.status === "failed")) {
        const why = (t.failureMessages[0] ?? "").split("\n")[0].slice(0, 300);
        console.log(`FAILED ${suite.name.replace(process.cwd() + "/", "")} > ${t.fullName}\n  ${why}`);
      }
      if (suite.status === "failed" && suite.assertionResults.length === 0) {
        console.log(`FAILED ${suite.name.replace(process.cwd() + "/", "")}: ${(suite.message ?? "").slice(0, 300)}`);
      }
    }
  }
  console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
' "${results[@]}" || status=1

if [[ -z "${POOLPOLICY_KEEP_TMP:-}" ]]; then
  leftovers="$(find "$run_tmp" -mindepth 1 -maxdepth 1 -name 'poolpolicy-*' -printf '  %f\n')"
  if [[ -n "$leftovers" ]]; then
    echo "the tests left these in the temp directory; the test that creates one must remove it:" >&2
    echo "$leftovers" >&2
    status=1
  fi
fi
exit "$status"
