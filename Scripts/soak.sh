#!/usr/bin/env bash
# make soak: echo-relay echo and echo-relay relay (in front of that echo) under udp-blast load for
# SOAK_SECONDS (default 60), two blasters at SOAK_RATE datagrams/s each (default 20000): one through the
# relay, one straight at the echo. Samples both daemons' resident memory and open descriptors every
# second. Fails if either daemon dies, if memory or descriptors grow after the warm-up, or if any
# datagram is unaccounted for (lost without a daemon or the kernel counting it as dropped).
set -euo pipefail
bin=${1:-.build/release}
seconds=${SOAK_SECONDS:-60}
rate=${SOAK_RATE:-20000}
size=${SOAK_SIZE:-200}
warmup=$(( seconds / 4 < 10 ? seconds / 4 : 10 ))
slack_kib=${SOAK_RSS_SLACK_KIB:-1024}
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# listening_address LOG: the first "listening on" address the daemon logged.
listening_address() {
    for _ in $(seq 200); do
        address=$(sed -n 's/.*listening on \([^,]*\).*/\1/p' "$1" | head -n 1)
        [ -n "$address" ] && { echo "$address"; return; }
        sleep 0.05
    done
    cat "$1" >&2
    echo "soak: a daemon did not start" >&2
    exit 1
}

"$bin/echo-relay" echo --listen 127.0.0.1:0 --stats-interval 10 2> "$work/echo.log" &
echo_pid=$!; pids+=("$echo_pid")
echo_address=$(listening_address "$work/echo.log")
"$bin/echo-relay" relay --listen 127.0.0.1:0 --upstream "$echo_address" --stats-interval 10 2> "$work/relay.log" &
relay_pid=$!; pids+=("$relay_pid")
relay_address=$(listening_address "$work/relay.log")

kernel_receive_drops() { awk '/^Udp: [0-9]/ {print $6}' /proc/net/snmp; }
drops_before=$(kernel_receive_drops)

echo "== soak: ${seconds} s, ${rate} datagrams/s of ${size} bytes through the relay ($relay_address -> $echo_address)" \
     "and ${rate}/s straight to the echo; warm-up ${warmup} s"
"$bin/udp-blast" --to "$relay_address" --duration "$seconds" --rate "$rate" --size "$size" --expect-replies --timeout 2 --json \
    > "$work/via-relay.json" &
blast_relay=$!; pids+=("$blast_relay")
"$bin/udp-blast" --to "$echo_address" --duration "$seconds" --rate "$rate" --size "$size" --expect-replies --timeout 2 --json \
    > "$work/direct.json" &
blast_direct=$!; pids+=("$blast_direct")

sample() { # PID: "rss_kib fds"
    echo "$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status") $(ls "/proc/$1/fd" | wc -l)"
}
echo "second echo_rss_kib echo_fds relay_rss_kib relay_fds" > "$work/samples.txt"
elapsed=0
failures=()
while kill -0 "$blast_relay" 2>/dev/null || kill -0 "$blast_direct" 2>/dev/null; do
    sleep 1
    elapsed=$((elapsed + 1))
    for name in echo relay; do
        pid_var=${name}_pid
        kill -0 "${!pid_var}" 2>/dev/null || { failures+=("echo-relay $name died at ${elapsed} s"); break 2; }
    done
    echo "$elapsed $(sample "$echo_pid") $(sample "$relay_pid")" >> "$work/samples.txt"
done
wait "$blast_relay" || failures+=("udp-blast through the relay exited $?")
wait "$blast_direct" || failures+=("udp-blast to the echo exited $?")
drops_after=$(kernel_receive_drops)

for name in echo relay; do
    pid_var=${name}_pid
    if kill -0 "${!pid_var}" 2>/dev/null; then
        kill -TERM "${!pid_var}"
        wait "${!pid_var}" || failures+=("echo-relay $name exited $? after SIGTERM")
    fi
done
pids=()

# Growth after warm-up: the largest sample after it against the sample at its end.
read -r echo_rss0 echo_fd0 relay_rss0 relay_fd0 < <(awk -v w="$warmup" '$1 == w {print $2, $3, $4, $5}' "$work/samples.txt")
read -r echo_rss1 echo_fd1 relay_rss1 relay_fd1 < <(awk -v w="$warmup" 'NR > 1 && $1 >= w {
    for (i = 2; i <= 5; i++) if ($i > m[i]) m[i] = $i } END {print m[2], m[3], m[4], m[5]}' "$work/samples.txt")
[ -n "${echo_rss0:-}" ] || failures+=("no sample at the end of the warm-up (${warmup} s)")
if [ -n "${echo_rss0:-}" ]; then
    [ "$echo_rss1" -le $((echo_rss0 + slack_kib)) ] || failures+=("echo memory grew from ${echo_rss0} KiB to ${echo_rss1} KiB")
    [ "$relay_rss1" -le $((relay_rss0 + slack_kib)) ] || failures+=("relay memory grew from ${relay_rss0} KiB to ${relay_rss1} KiB")
    [ "$echo_fd1" -le "$echo_fd0" ] || failures+=("echo descriptors grew from ${echo_fd0} to ${echo_fd1}")
    [ "$relay_fd1" -le "$relay_fd0" ] || failures+=("relay descriptors grew from ${relay_fd0} to ${relay_fd1}")
fi

# Accounting: every datagram sent came back, or a daemon or the kernel counted it as dropped.
field() { sed -n "s/.*\"$2\": \([0-9]*\).*/\1/p" "$work/$1.json"; }
drops() { # LOG: the daemon's dropped datagrams, summed from its final totals
    grep "final totals" "$1" | grep -o '\(queue_full\|send_failed\|truncated\|refused\|foreign\)=[0-9]*' |
        awk -F= '{s += $2} END {print s + 0}'
}
sent=$(( $(field via-relay sent) + $(field direct sent) ))
received=$(( $(field via-relay received) + $(field direct received) ))
lost=$(( $(field via-relay lost) + $(field direct lost) ))
daemon_drops=$(( $(drops "$work/echo.log") + $(drops "$work/relay.log") ))
kernel_drops=$((drops_after - drops_before))
unaccounted=$((lost - daemon_drops - kernel_drops))
[ "$unaccounted" -le 0 ] || failures+=("$unaccounted datagrams unaccounted for")

echo "== datagrams: sent $sent, echoed back $received, lost $lost (counted as dropped: daemons $daemon_drops," \
     "kernel receive buffers $kernel_drops); unaccounted $((unaccounted > 0 ? unaccounted : 0))"
echo "== echo-relay echo:  RSS ${echo_rss0:-?} KiB after warm-up, peak after it ${echo_rss1:-?} KiB; descriptors ${echo_fd0:-?} -> ${echo_fd1:-?}"
echo "== echo-relay relay: RSS ${relay_rss0:-?} KiB after warm-up, peak after it ${relay_rss1:-?} KiB; descriptors ${relay_fd0:-?} -> ${relay_fd1:-?}"
echo "== round trip via relay: p50 $(sed -n 's/.*"rtt_p50_us": \([0-9.]*\).*/\1/p' "$work/via-relay.json") us," \
     "p99 $(sed -n 's/.*"rtt_p99_us": \([0-9.]*\).*/\1/p' "$work/via-relay.json") us"
if [ "${#failures[@]}" -gt 0 ]; then
    printf 'soak FAILED: %s\n' "${failures[@]}" >&2
    echo "-- samples:" >&2; cat "$work/samples.txt" >&2
    echo "-- relay log:" >&2; tail -n 5 "$work/relay.log" >&2
    exit 1
fi
echo "== soak passed"
