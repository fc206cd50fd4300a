#!/usr/bin/env bash
# Proves the send path's randomized checks by the bugs they exist to catch. Each mutant puts one old
# bug back into a scratch copy of the package, and each of its two tests must fail against it: for
# mutants 1-5 the fault-injection test (simulated kernel) and the differential test (real loopback
# receivers); for 6-9, which break the batch forms' runs (`DatagramRing.uniformRun`, which only the
# lean forms on a connected socket reach), the randomized lean-forms test (real receivers) and the
# deterministic runs test.
#   1  an empty datagram may end a GSO run (the kernel's split drops it)
#   2  a refused super-datagram (EIO/EINVAL) turns segmentation off for the whole socket at once
#   3  a pending socket error is charged to the head datagram (the whole super-datagram at the head)
#   4  a GSO run on a ring whose slots carry addresses or metadata compares lengths only, not keys
#   5  a slot's key changes with its metadata only, not with its destination (runs cross destinations)
#   6  a batch extends the ring's run though datagrams of another length are queued before it
#   7  datagrams leaving the ring do not shorten its run
#   8  a batch of another length extends the run
#   9  an in-place batch whose lengths change counts all its datagrams as a run
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=${MUTANT_SCRATCH:-/tmp/batched-udp-mutants}
rm -rf "$scratch" && mkdir -p "$scratch"
survivors=0
for mutant in ${MUTANTS:-1 2 3 4 5 6 7 8 9}; do
    copy="$scratch/m$mutant"
    mkdir -p "$copy"
    (cd "$root" && git ls-files -co --exclude-standard | tar -cf - -T -) | tar -C "$copy" -xf -
    python3 "$root/Scripts/mutate.py" "$copy" "$mutant"
    tests="randomOperationsKeepEveryPromise randomTrafficArrivesExactlyAsCounted"
    [ "$mutant" -ge 6 ] && tests="randomLeanEnqueuesArriveExactlyAsQueued batchesOfOneSizeLeaveAsTheRunsTheyAre"
    for test in $tests; do
        if (cd "$copy" && CI=true swift test --filter "$test" >"$copy/$test.log" 2>&1); then
            echo "mutant $mutant SURVIVED $test (log: $copy/$test.log)"
            survivors=$((survivors + 1))
        else
            echo "mutant $mutant killed by $test: $(grep -m1 -oE '(seed [0-9]+[^(]*|Assertion failed|Expectation failed: [^)]*)' "$copy/$test.log" | cut -c1-160)"
        fi
    done
done
[ "$survivors" -eq 0 ] && echo "every mutant killed by both of its tests"
exit "$survivors"
