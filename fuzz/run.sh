#!/usr/bin/env bash
# Runs every libFuzzer target for SECS seconds each (default 10), on stable
# Rust: sanitizer coverage comes from `-C passes=sancov-module` and LLVM
# options, which need no nightly (no AddressSanitizer; Rust code is memory
# safe and every target asserts its decoder's invariants).
#
#   fuzz/run.sh [SECS] [TARGET...]
#
# New inputs go to fuzz/target/corpus/TARGET (seeded from fuzz/corpus and,
# for elf, vmm/tests/elf-corpus); a failing input is saved in
# fuzz/artifacts/TARGET and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-10}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(record bench guest_io elf mailbox specs)
triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-C passes=sancov-module -C llvm-args=-sanitizer-coverage-level=4 \
-C llvm-args=-sanitizer-coverage-inline-8bit-counters -C llvm-args=-sanitizer-coverage-pc-table \
-C llvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -C debug-assertions -C overflow-checks"
# The fuzz targets never boot a guest: embed a placeholder instead of
# building the real one.
export SMPCALL_GUEST_ELF="$PWD/../vmm/tests/elf-corpus/02-text.elf"
cargo build --release --target "$triple" --bins
status=0
for t in "${targets[@]}"; do
    work="target/corpus/$t"
    mkdir -p "$work" "artifacts/$t"
    extra=("corpus/$t")
    [ "$t" = elf ] && extra+=("../vmm/tests/elf-corpus")
    echo "== $t: $secs s"
    if ! "target/$triple/release/$t" -max_total_time="$secs" -max_len=8192 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "$work" "${extra[@]}" \
        2>&1 | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|SUMMARY|==[0-9]+==|thread '|panicked)"; then
        :
    fi
    if [ -n "$(ls -A "artifacts/$t")" ]; then
        echo "!! $t: failing inputs in fuzz/artifacts/$t"
        status=1
    fi
done
exit $status
