#!/usr/bin/env bash
# make demo: udp-blast sends 1,000,000 datagrams through a BatchedUDPWatcher to a udp-blast sink on
# loopback, which checks that every one arrived once and in order. Leaves no process behind.
set -euo pipefail
bin=${1:-.build/release}
count=${DEMO_COUNT:-1000000}
work=$(mktemp -d)
sink_pid=""
cleanup() {
    [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$bin/udp-blast" sink --listen 127.0.0.1:0 --count "$count" > "$work/sink.txt" 2>&1 &
sink_pid=$!
for _ in $(seq 100); do grep -q '^listening' "$work/sink.txt" 2>/dev/null && break; sleep 0.05; done
address=$(sed -n 's/^listening //p' "$work/sink.txt")
[ -n "$address" ] || { cat "$work/sink.txt"; echo "demo: the sink did not start" >&2; exit 1; }

echo "== udp-blast: $count datagrams of 64 bytes to $address, SO_SNDBUF 4096, sendmmsg batches of 1024"
"$bin/udp-blast" --to "$address" --count "$count" --size 64 --sndbuf 4096
status=0
wait "$sink_pid" || status=$?
sink_pid=""
echo
sed '/^listening/d' "$work/sink.txt"
exit "$status"
