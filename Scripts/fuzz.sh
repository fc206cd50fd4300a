#!/usr/bin/env bash
# Runs the libFuzzer targets built by `make fuzz-build`.
#   Scripts/fuzz.sh test SECONDS   replays the saved corpus and every input that once crashed
#                                  (Fuzz/Crashes/<target>-*), then fuzzes each target for SECONDS
#   Scripts/fuzz.sh run SECONDS    fuzzes each target for SECONDS
# New inputs go to .build/fuzz/<target>; a crash leaves its input at .build/fuzz/<target>-crash-* and
# fails the run (copy it to Fuzz/Crashes/ once fixed, so every later run replays it).
set -euo pipefail
mode=$1 seconds=$2
bin=Fuzz/.build/debug
export SWIFT_BACKTRACE=enable=no   # ASan reports the crash; the Swift backtracer would only get in its way
for target in FuzzSocketAddress FuzzReceivedMessage; do
    mkdir -p ".build/fuzz/$target"
    if [ "$mode" = test ]; then
        "$bin/$target" -runs=0 -artifact_prefix=".build/fuzz/$target-" "Fuzz/Corpus/$target" 2>&1 | grep -E '^Done' | sed "s/^/$target corpus: /"
        crashes=(Fuzz/Crashes/"$target"-*)
        if [ -e "${crashes[0]}" ]; then
            "$bin/$target" -artifact_prefix=".build/fuzz/$target-" "${crashes[@]}" 2>&1 | grep -cE '^Executed .* in [0-9]+ ms' | sed "s/^/$target former crashes replayed: /"
        fi
    fi
    "$bin/$target" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix=".build/fuzz/$target-" \
        ".build/fuzz/$target" "Fuzz/Corpus/$target" >".build/fuzz/$target.log" 2>&1 || {
        tail -40 ".build/fuzz/$target.log"
        echo "$target: crash, input saved under .build/fuzz/$target-*" >&2
        exit 1
    }
    echo "$target: $(grep -E '^stat::number_of_executed_units' ".build/fuzz/$target.log" | awk '{print $2}') inputs in ${seconds} s, $(ls ".build/fuzz/$target" | wc -l) in the grown corpus, no crash"
done
