#!/usr/bin/env bash
# Runs the built test suite (dist/) in two lanes at once, as `npm test` does.
#
# Lane A holds the suites that allow a render a minute or more: the whole
# catalogue first (the most CPU), then the unit tests, visuals, preview,
# command line, queue contract and the end-to-end farm runs; it runs at a
# lower priority and its report is printed when it is done. Lane B holds the
# suites that time deadlines, heartbeats and probes (daemons, supervisors,
# crashes), the untimed ones first, while lane A's catalogue keeps the CPU
# busy. On the 2-core development machine the two lanes take about 10
# minutes, against 12 for one lane.
#
# `npx mocha` still runs every file in one lane (.mocharc.json); the options
# below are the same as there.
set -euo pipefail
cd "$(dirname "$0")/.."

mocha_options=(--no-config --timeout 60000 --slow 5000 --exit --forbid-only)
lane_a=(
  dist/test/integration/catalogue.test.js
  dist/test/unit/*.test.js
  dist/test/integration/visual.test.js
  dist/test/integration/preview.test.js
  dist/test/integration/cli.test.js
  dist/test/integration/queue-contract.test.js
  dist/test/integration/farm.test.js
)
lane_b=(
  dist/test/integration/supervisor-http.test.js
  dist/test/integration/dashboard.test.js
  dist/test/integration/daemon.test.js
  dist/test/integration/renderer.test.js
  dist/test/integration/fonts.test.js
  dist/test/integration/supervisor-recovery.test.js
  dist/test/integration/cases-b08-b10-b12.test.js
)

# Every test file is in exactly one lane.
listed=$(printf '%s\n' "${lane_a[@]}" "${lane_b[@]}" | sort)
present=$(printf '%s\n' dist/test/unit/*.test.js dist/test/integration/*.test.js | sort)
if [ "$listed" != "$present" ]; then
  echo "test.sh: the lanes do not list exactly the test files of dist/test:" >&2
  diff <(echo "$listed") <(echo "$present") >&2 || true
  exit 1
fi

report_a=$(mktemp)
trap 'rm -f "$report_a"' EXIT
nice -n 10 npx mocha "${mocha_options[@]}" "${lane_a[@]}" >"$report_a" 2>&1 &
lane_a_pid=$!

status_b=0
npx mocha "${mocha_options[@]}" "${lane_b[@]}" || status_b=$?
status_a=0
wait "$lane_a_pid" || status_a=$?

echo
echo "=== lane A: unit, catalogue, visuals, preview, command line, queues ==="
cat "$report_a"
echo "lane A exit status: $status_a; lane B exit status: $status_b"
[ "$status_a" -eq 0 ] && [ "$status_b" -eq 0 ]
