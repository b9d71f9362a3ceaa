#!/usr/bin/env bash
# Runs vitest projects and ends with one plain line "N passed, N failed, N skipped" that any CI
# log reader understands; exits non-zero on failure.
#
#   run-tests.sh                  unit and integration, then the real-node story (e2e)
#   run-tests.sh unit integration the projects named, in one vitest run
#
# The e2e project runs in a vitest run of its own, after the others: its control plane listens on
# the real node's link and its node takes the whole machine's attention for about four minutes.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
results=()
status=0

# Runs one vitest invocation for the projects given; its JSON report is added to $results.
run_projects() {
  local out; out="$(mktemp)"
  local projects=()
  for p in "$@"; do projects+=(--project "$p"); done
  npx vitest run "${projects[@]}" --reporter=default --reporter=json --outputFile.json="$out" || status=1
  results+=("$out")
}

if (($#)); then
  run_projects "$@"
else
  run_projects unit integration
  run_projects e2e
fi
node -e '
  const fs = require("fs");
  let passed = 0, failed = 0, skipped = 0, total = 0;
  for (const file of process.argv.slice(1)) {
    if (!fs.existsSync(file) || fs.statSync(file).size === 0) { console.error(`no report from a vitest run (${file})`); process.exit(1); }
    const r = JSON.parse(fs.readFileSync(file, "utf8"));
    passed += r.numPassedTests; failed += r.numFailedTests; skipped += r.numPendingTests + r.numTodoTests;
    total += r.numTotalTests;
    if (r.numTotalTests === 0) { console.error(`no test ran (${file})`); process.exit(1); }
  }
  console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
' "${results[@]}" || status=1
rm -f "${results[@]}"
exit "$status"
