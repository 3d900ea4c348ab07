#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite twice: a
# normal build (gcc) and a clang ASan+UBSan build that also holds the libFuzzer
# targets (each fuzzed for FUZZ_SECONDS); in between, builds the container
# images (and those of the previous commit, for the upgrade) and runs the
# multi-host Kubernetes test on them (root). Exit 0 only
# if every test passes.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh

run_suite() {
  local dir=$1; shift
  echo "== build $dir (at $(( $(date +%s) - start )) s)"
  bash scripts/build.sh "$dir" "$@"
  echo "== test $dir (at $(( $(date +%s) - start )) s)"
  # Two at a time: the integration suites hold one lock (one cluster at a
  # time, tests/CMakeLists.txt), unit and static tests run beside them; the
  # fuzz targets (fixed time each, CPU-bound) run two at a time after them.
  (cd "$dir" && ctest --output-on-failure --timeout 900 -j2 -LE fuzz)
  if [[ -n $(cd "$dir" && ctest -N -L fuzz | grep "Test #") ]]; then
    (cd "$dir" && ctest --output-on-failure --timeout 900 -j2 -L fuzz)
  fi
}

run_suite build

# Kubernetes: the container images, built offline (mmdebstrap + podman), and
# the multi-host test that runs what the production overlay renders on
# network namespaces (needs root). Every run: CI machines start empty.
echo "== images (at $(( $(date +%s) - start )) s)"
bash deploy/images/build.sh --sizes --previous
echo "== multi-host: the production overlay on network namespaces (at $(( $(date +%s) - start )) s)"
/usr/bin/python3 tests/k8s/multihost.py --build-dir build
# Without Debian: deploy/compose on the same images, with Debian's
# podman-compose, driven by real clients.
echo "== compose (at $(( $(date +%s) - start )) s)"
/usr/bin/python3 tests/compose/test_compose.py --build-dir build --source-dir .
# Sanitizers: leaks are reported too; a finding fails the test that hit it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
CC=clang CXX=clang++ run_suite build-san -DSWITCHBOARD_SANITIZE=ON -DSWITCHBOARD_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFUZZ_SECONDS="${FUZZ_SECONDS:-12}"
grep -h "^FUZZ " build-san/Testing/Temporary/LastTest.log || true

echo "== all tests passed in $(( $(date +%s) - start )) s"
