#!/usr/bin/env bash
# Runs the vitest projects given as arguments (default: unit and integration; the real-node
# story is the project e2e, run by `make e2e`) and ends with one plain line
# "N passed, N failed, N skipped" that any CI log reader understands; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
results="$(mktemp)"
projects=()
(($#)) || set -- unit integration
for p in "$@"; do projects+=(--project "$p"); done
npx vitest run "${projects[@]}" --reporter=default --reporter=json --outputFile.json="$results"
status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
  if (r.numTotalTests === 0) { console.error("no test ran"); process.exit(1); }
' "$results" || status=1
rm -f "$results"
exit "$status"
