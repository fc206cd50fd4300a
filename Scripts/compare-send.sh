#!/usr/bin/env bash
# Paired comparison of udp-blast with C libev senders (one send() per datagram; sendmmsg batches of
# 1024): COUNT datagrams of SIZE bytes to a loopback socket that never reads, ROUNDS rounds alternating
# the contenders, median wall time of each. Usage: Scripts/compare-send.sh [COUNT] [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000000}; size=${2:-64}; rounds=${3:-5}
swift build -c release --product udp-blast >/dev/null
mkdir -p .build/c-refs
cc -O2 -Wall -o .build/c-refs/send_ref Benchmarks/CReferences/send_ref.c -lev
port=$(python3 -c 'import socket; s=socket.socket(2,2); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -c "import socket,time; s=socket.socket(2,2); s.bind(('127.0.0.1',$port)); time.sleep(3600)" &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT
sleep 0.3
declare -A times
for round in $(seq "$rounds"); do
    times[send]+="$(.build/c-refs/send_ref send 127.0.0.1 "$port" "$count" "$size" | awk '{print $3}') "
    times[sendmmsg]+="$(.build/c-refs/send_ref sendmmsg 127.0.0.1 "$port" "$count" "$size" | awk '{print $3}') "
    times[udp-blast]+="$(.build/release/udp-blast --to 127.0.0.1:"$port" --count "$count" --size "$size" --json \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])') "
done
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${times[send]}" | median)
printf '%-34s %10s %8s\n' "sender ($count x $size B, median of $rounds)" "seconds" "vs send"
for name in send sendmmsg udp-blast; do
    m=$(echo "${times[$name]}" | median)
    printf '%-34s %10.3f %8.2fx\n' "$name" "$m" "$(echo "$m / $base" | bc -l)"
done
