#!/usr/bin/env bash
# instructions.sh INSTRUCTION_COUNTS SEND_REF RECV_REF: user-space instructions per datagram, counted by
# valgrind's callgrind (repeatable to the instruction, unlike time), for the package's send and receive
# paths (Benchmarks/InstructionCounts) and the C libev references (Benchmarks/CReferences).
#
# Each figure is the slope between two runs, LOW and HIGH datagrams (default 100,000 and 300,000):
# (instructions(HIGH) - instructions(LOW)) / (HIGH - LOW), so start-up and one-off costs cancel. The Swift
# send and receive workloads and the C receive reference count only their measured phase
# (--toggle-collect); the C sender is counted whole, its set-up cancels in the slope.
# valgrind 3.19 cannot read the Swift toolchain's DWARF, so each binary is counted on a copy stripped of
# its debug information (symbols stay, for --toggle-collect).
# Prints one line per workload: "instructions <name> <per datagram>".
set -euo pipefail
counts=$1 send_ref=$2 recv_ref=$3
low=${INSTRUCTIONS_LOW:-100000}
high=${INSTRUCTIONS_HIGH:-300000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for binary in "$counts" "$send_ref" "$recv_ref"; do
    cp "$binary" "$work/" && strip --strip-debug "$work/$(basename "$binary")"
done
counts="$work/$(basename "$counts")" send_ref="$work/$(basename "$send_ref")" recv_ref="$work/$(basename "$recv_ref")"

# instructions TOGGLE COMMAND...: the instructions callgrind counted (only inside TOGGLE, unless it is "-").
instructions() {
    local toggle=$1; shift
    local options=(--tool=callgrind --callgrind-out-file="$work/out" --dump-instr=no)
    [ "$toggle" != - ] && options+=(--collect-atstart=no "--toggle-collect=$toggle")
    valgrind "${options[@]}" "$@" > "$work/stdout" 2> "$work/stderr" || {
        echo "instructions.sh: '$*' failed:" >&2; cat "$work/stdout" "$work/stderr" >&2; exit 1
    }
    sed -n 's/^summary: *//p' "$work/out"
}

# slope NAME TOGGLE COMMAND-WITH-%N%: per-datagram instructions between LOW and HIGH datagrams.
slope() {
    local name=$1 toggle=$2; shift 2
    local a b
    a=$(instructions "$toggle" "${@//%N%/$low}")
    b=$(instructions "$toggle" "${@//%N%/$high}")
    awk -v name="$name" -v a="$a" -v b="$b" -v l="$low" -v h="$high" 'BEGIN { printf "instructions %s %.1f\n", name, (b - a) / (h - l) }'
}

# A loopback port that takes datagrams and never reads them, for the C sender.
python3 -c 'import socket,time,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); sys.stdout.flush(); time.sleep(3600)' > "$work/port" &
sink=$!
trap 'kill $sink 2>/dev/null; rm -rf "$work"' EXIT
while [ ! -s "$work/port" ]; do sleep 0.1; done
port=$(cat "$work/port")

slope "c-send-sendmmsg" - "$send_ref" sendmmsg 127.0.0.1 "$port" %N% 64
slope "c-send-gso" - "$send_ref" gso 127.0.0.1 "$port" %N% 64
for api in ${INSTRUCTIONS_APIS-single copy batch batch-copy single-source wildcard wildcard-source}; do
    for gso in no-gso gso; do
        slope "send-$api-$gso" '*sendPhase*' "$counts" send %N% "$api" "$gso"
    done
done
slope "c-receive" receive_phase "$recv_ref" %N% no-gro
slope "c-receive-gro" receive_phase "$recv_ref" %N% gro
slope "receive" '*receivePhase*' "$counts" receive %N% no-gro
slope "receive-gro" '*receivePhase*' "$counts" receive %N% gro
