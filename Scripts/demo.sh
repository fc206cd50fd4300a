#!/usr/bin/env bash
# make demo: echo-relay echo on a free loopback port, udp-blast --expect-replies against it for a few
# seconds, a short summary, then SIGTERM to the relay and its final totals. Leaves no process behind,
# also when interrupted.
set -euo pipefail
bin=${1:-.build/release}
seconds=${DEMO_SECONDS:-3}
rate=${DEMO_RATE:-100000}
work=$(mktemp -d)
relay_pid=""
cleanup() {
    if [ -n "$relay_pid" ]; then kill -KILL "$relay_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin/echo-relay" echo --listen 127.0.0.1:0 --stats-interval 1 2> "$work/relay.log" &
relay_pid=$!
address=""
for _ in $(seq 200); do
    address=$(sed -n 's/.*echo: listening on //p' "$work/relay.log" | head -n 1)
    [ -n "$address" ] && break
    kill -0 "$relay_pid" 2>/dev/null || break
    sleep 0.05
done
[ -n "$address" ] || { cat "$work/relay.log"; echo "demo: echo-relay did not start" >&2; exit 1; }

echo "== echo-relay echo is listening on $address"
echo "== udp-blast: ${seconds} s at ${rate} datagrams/s of 64 bytes, replies read on the same socket"
"$bin/udp-blast" --to "$address" --duration "$seconds" --rate "$rate" --size 64 --expect-replies | tee "$work/blast.txt"

kill -TERM "$relay_pid"
status=0
wait "$relay_pid" || status=$?
relay_pid=""
value() { awk -v k="$1" '$1 == k {print $2}' "$work/blast.txt"; }
echo
echo "== summary: $(value pps) datagrams/s sent, $(value received) of $(value sent) echoed back," \
     "$(value lost) lost, round trip p50 $(value rtt_p50_us) us, p99 $(value rtt_p99_us) us"
echo "== echo-relay after SIGTERM (exit status $status):"
sed 's/^[^ ]* [a-z]* echo-relay: \[echo_relay\] /  /' "$work/relay.log"
exit "$status"
