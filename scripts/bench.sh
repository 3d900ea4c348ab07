#!/usr/bin/env bash
# Builds (release settings) and runs the benchmarks; each prints its numbers
# next to a reference measured in the same run. Not part of the test suite.
#   scripts/bench.sh                 process + latency (K=2,4,8) + fleet
#   scripts/bench.sh process [...]   one gateway process vs the plain lws server
#   scripts/bench.sh latency [...]   UserConnections / TerminateUser at K gateways
#   scripts/bench.sh fleet [...]     ~100k sessions, churn, sessions lost
# Extra arguments go to tests/bench/bench.py (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build >/dev/null
if [ $# -eq 0 ]; then
  for cmd in process latency fleet; do
    echo "== bench $cmd"
    /usr/bin/python3 tests/bench/bench.py "$cmd" --build-dir build --source-dir .
  done
else
  /usr/bin/python3 tests/bench/bench.py "$@" --build-dir build --source-dir .
fi
