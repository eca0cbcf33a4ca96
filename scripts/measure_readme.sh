#!/usr/bin/env bash
# Measure the figures that README.md ("Measured") and docs/testing.md quote, and print them as the
# markdown block to paste there, with the machine and the date.
#
#   bash scripts/measure_readme.sh              # everything: runs the whole test command (long)
#   bash scripts/measure_readme.sh cli disk     # only some parts: tests, run, cli, disk
#
# - tests: `bash scripts/test.sh` once, its wall time, and each pytest run's counts (.venv, then
#   .venv-eval, .venv-llava, .venv-vllm unless VTCOMPRESS_SKIP_EVAL / _LLAVA / _VLLM is 1).
# - run: `bash scripts/run.sh` (the first-run command; .venv as it is), wall time.
# - cli: `vtcompress --version` and `vtcompress run --help`, median wall time of 5 runs each.
# - disk: du of each test environment that exists.
# The log of each part is kept in $MEASURE_LOGS (default: a temporary folder, printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
parts=${*:-tests run cli disk}
logs=${MEASURE_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/vtcompress-measure.XXXXXX")}
mkdir -p "$logs"
rows=()

has() { [[ " $parts " == *" $1 "* ]]; }
gb() { awk -v mb="$1" 'BEGIN { printf "%.1f GB", mb / 1024 }'; }
minutes() { printf '%d min %02d s' $(($1 / 60)) $(($1 % 60)); }
median_wall() {  # median wall seconds of 5 runs of "$@" (output discarded)
    local times=() t0 t1
    for _ in 1 2 3 4 5; do
        t0=$(date +%s.%N)
        "$@" >/dev/null 2>&1 || true
        t1=$(date +%s.%N)
        times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n 3p | xargs printf '%.2f s'
}

if has tests; then
    envs=(.venv)
    [ "${VTCOMPRESS_SKIP_EVAL:-0}" = 1 ] || envs+=(.venv-eval)
    [ "${VTCOMPRESS_SKIP_LLAVA:-0}" = 1 ] || envs+=(.venv-llava)
    [ "${VTCOMPRESS_SKIP_VLLM:-0}" = 1 ] || envs+=(.venv-vllm)
    start=$SECONDS
    status=0
    bash scripts/test.sh >"$logs/test.log" 2>&1 || status=$?
    took=$((SECONDS - start))
    [ "$status" = 0 ] || echo "warning: scripts/test.sh exited with $status (see $logs/test.log)" >&2
    # Each pytest run ends with one line such as "1630 passed, 36 skipped in 935.2s (0:15:35)"
    # (framed with "=" without -q).
    mapfile -t counts < <(grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped)\b.* in [0-9.]+s' "$logs/test.log" \
        | sed -E 's/^=+ //; s/ in [0-9.]+s.*//')
    rows+=("| \`bash scripts/test.sh\`, the whole test command (pip's cache warm) | $(minutes "$took") |")
    for i in "${!envs[@]}"; do
        rows+=("| tests in \`${envs[$i]}\` | ${counts[$i]:-not run (see the log)} |")
    done
fi

if has run; then
    start=$SECONDS
    bash scripts/run.sh >"$logs/run.log" 2>&1 || echo "warning: scripts/run.sh failed (see $logs/run.log)" >&2
    rows+=("| \`bash scripts/run.sh\` (\`.venv\` present) | $((SECONDS - start)) s |")
fi

if has cli; then
    rows+=("| \`vtcompress --version\` (median of 5) | $(median_wall .venv/bin/python -m vtcompress --version) |")
    rows+=("| \`vtcompress run --help\` (median of 5) | $(median_wall .venv/bin/python -m vtcompress run --help) |")
fi

if has disk; then
    total=0
    for env in .venv .venv-eval .venv-llava .venv-vllm; do
        [ -d "$env" ] || continue
        mb=$(du -s --block-size=1M "$env/" | cut -f1)
        total=$((total + mb))
        rows+=("| disk: \`$env\` | $(gb "$mb") |")
    done
    rows+=("| disk: the test environments together | $(gb "$total") |")
fi

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
echo "| measured on $(nproc) cores $(uname -m) (${cpu:-unknown CPU}), ${gpu:-no GPU}, $(date -u +%Y-%m-%d) | |"
echo "| --- | --- |"
printf '%s\n' "${rows[@]}"
echo "(logs: $logs)" >&2
