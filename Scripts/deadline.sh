#!/usr/bin/env bash
# deadline.sh SECONDS COMMAND...: runs COMMAND; if it is still running after SECONDS, says what it was
# doing and fails (exit 124) instead of letting CI wait for its own, much later, limit with nothing learnt.
# What it says: the tests that started and never finished (from Swift Testing's "◇ Test … started" lines),
# then the stack of every thread of every process under COMMAND (gdb, when installed), then it stops them.
set -uo pipefail
limit=$1; shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT

"$@" > >(tee "$log") 2>&1 &
pid=$!

descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

deadline=$((SECONDS + limit))
while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS < deadline)); then sleep 1; continue; fi
    processes="$pid $(descendants "$pid")"
    {
        echo "deadline.sh: '$*' still running after $limit s."
        echo "Tests started and not finished:"
        sed -n 's/.*◇ Test \(.*\) started\.$/\1/p' "$log" | sort -u > "$log.started"
        sed -n 's/.*[✔✘] Test \(.*\) \(passed\|failed\) after.*/\1/p' "$log" | sort -u > "$log.ended"
        comm -23 "$log.started" "$log.ended" | sed 's/^/  /'
        rm -f "$log.started" "$log.ended"
        for process in $processes; do
            [ "$(cat "/proc/$process/comm" 2>/dev/null)" = tee ] && continue
            echo "== process $process: $(tr '\0' ' ' < "/proc/$process/cmdline" 2>/dev/null | cut -c1-200)"
            if command -v gdb >/dev/null 2>&1; then
                timeout 60 gdb -p "$process" -batch -ex "thread apply all bt 16" 2>/dev/null | grep -E '^(Thread |#)' | cut -c1-220
            else
                cat "/proc/$process/wchan" 2>/dev/null; echo
            fi
        done
    } >&2
    kill -TERM $processes 2>/dev/null
    sleep 5
    kill -KILL $processes 2>/dev/null
    exit 124
done
wait "$pid"
