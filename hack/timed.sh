#!/usr/bin/env bash
# timed.sh NAME CMD... runs CMD and prints how long it took, so the CI log
# shows where the 90-minute budget goes (go test prints each package's time).
set -uo pipefail
name=$1; shift
start=$(date +%s)
echo "== $name"
"$@"; rc=$?
echo "== $name: $(( $(date +%s) - start ))s (exit $rc)"
exit $rc
