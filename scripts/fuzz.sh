#!/usr/bin/env bash
# Fuzzes request parsing and validation (fuzz/fuzz_targets/requests.rs) for a bounded time.
#
#   scripts/fuzz.sh                  # 300 s
#   FUZZ_SECONDS=30 scripts/fuzz.sh  # a quick check
#
# Needs a nightly toolchain (cargo fuzz builds with sanitizers); installs cargo-fuzz, pinned, when
# it is missing. Reads the tracked seeds (fuzz/seeds/requests) and grows a working corpus in
# fuzz/corpus/requests; both it and fuzz/artifacts (crash-*, timeout-*, oom-* inputs) are
# gitignored (fuzz/.gitignore). Prints the executions, coverage and corpus size; exits non-zero
# when libFuzzer found a crash, timeout or out-of-memory input.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
SECONDS_TO_RUN=${FUZZ_SECONDS:-300}
TARGET=requests

cd "$(dirname "$0")/.."

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

corpus=fuzz/corpus/$TARGET
seeds=fuzz/seeds/$TARGET
artifacts=fuzz/artifacts/$TARGET
log=fuzz/target/fuzz-$TARGET.log
mkdir -p "$corpus" "$artifacts" fuzz/target
before=$(ls "$artifacts")

# New inputs go to the first corpus directory; the seeds are only read.
cmd=(cargo +nightly fuzz run "$TARGET" "$corpus" "$seeds" --
    "-max_total_time=$SECONDS_TO_RUN" -rss_limit_mb=2048 -timeout=5 -print_final_stats=1)
echo "+ ${cmd[*]}"
set +e
"${cmd[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

new=$(comm -13 <(echo "$before") <(ls "$artifacts") | sed "s|^|$artifacts/|")
status=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -n 1 || true)
stat() { grep -E "^stat::$1:" "$log" | tail -n 1 | awk '{print $2}'; }

echo
echo "== fuzz summary ($TARGET, ${SECONDS_TO_RUN}s, cargo-fuzz $CARGO_FUZZ_VERSION)"
echo "executions:    $(stat number_of_executed_units)"
echo "executions/s:  $(stat average_exec_per_sec)"
echo "peak RSS (MB): $(stat peak_rss_mb)"
echo "corpus files:  $(ls "$corpus" | wc -l) in $corpus (libFuzzer's own count is corp: below)"
echo "last status:   ${status:-none}"
echo "log:           $log"
if [ "$rc" -ne 0 ] || [ -n "$new" ]; then
    echo "RESULT: libFuzzer found a problem (exit status $rc)"
    [ -n "$new" ] && printf '  %s\n' $new
    echo "reproduce: cargo +nightly fuzz run $TARGET <artifact>; minimize: cargo +nightly fuzz tmin $TARGET <artifact>"
    exit $((rc == 0 ? 1 : rc))
fi
echo "RESULT: no crash, timeout or out-of-memory input found"
