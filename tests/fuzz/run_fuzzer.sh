#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time over a scratch copy of its seed
# corpus (the repository's corpus is never written), prints one summary line
# (executions, exec/s, edges covered), and fails on any finding, keeping the
# input that triggered it under FINDINGS_DIR.
#   run_fuzzer.sh BINARY SEED_DIR SECONDS FINDINGS_DIR
set -uo pipefail
bin=$1 seeds=$2 secs=$3 findings=$4
name=$(basename "$bin")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$findings"
cp "$seeds"/* "$work/corpus/" 2>/dev/null || true
"$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  -artifact_prefix="$findings/$name-" "$work/corpus" > "$work/log" 2>&1
rc=$?
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$')
speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$work/log" | grep -o '[0-9]*$')
last=$(grep -E '^#[0-9]+' "$work/log" | tail -1)
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
echo "FUZZ $name: ${execs:-?} runs in ${secs}s, ${speed:-?} exec/s, cov ${cov:-?} edges, ft ${ft:-?}, corpus ${corp:-?} (from $(ls "$seeds" | wc -l) seeds)"
if [[ $rc -ne 0 ]]; then
  echo "FUZZ $name FAILED (exit $rc); findings in $findings:"
  ls -l "$findings" | grep "$name-" || true
  tail -60 "$work/log"
  exit 1
fi
