#!/usr/bin/env python3
"""make bench: the package against C libev references and SwiftNIO, measured in the same run.

Every workload runs BENCH_ROUNDS rounds (default 9); within a round the contenders run one after another,
and each figure is the median over the rounds. A send ratio is paired: its two contenders run next to
each other in every round (SwiftNIO GSO one apart), in alternating order, and the ratio is the median of
the per-round ratios (taken on their logarithms, so that A ÷ B is exactly 1 ÷ (B ÷ A) for any number of
rounds). This VM switches every few seconds between a fast phase and one about twice as slow, so a ratio
of two medians moves with where the switches land (0.77× and 1.02× for the same two binaries two minutes
apart) while the paired ratio stays within a few percent; the table shows the ratio of the medians and
the per-round range beside it. Send figures are whole-process wall time (start to exit) for COUNT
datagrams to a loopback socket that never reads (this script holds it); echo figures are round trips per
second from the same client, udp-blast with 4,096 datagrams awaiting replies; latency figures are
round-trip p50s of a paced udp-blast and of a closed-loop C ping-pong client running at the same time
against the C echo server. Same payload sizes, batch sizes and sink for every contender. The Swift
executables (the examples, the SwiftNIO peer) are built with --static-swift-stdlib, as `make demo` builds
the examples; the C references link libev and libc dynamically.

Usage: Scripts/bench.py MALLOC_REPORT INSTRUCTIONS [METADATA_REPORT...]
  MALLOC_REPORT: the ordo-one suite's markdown output (mallocs per datagram, metadata costs);
  INSTRUCTIONS: Scripts/instructions.sh's output (user-space instructions per datagram, callgrind);
  METADATA_REPORT: more ordo-one passes over the metadata pairs alone. Each metadata ratio compares two
  nearly identical workloads that ordo-one runs one after the other, so a burst of noise on this VM lands
  on one of them: the ratio shown is the median of the per-pass ratios (every pass listed).
"""
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))
BLAST = ".build/release/udp-blast"
RELAY = ".build/release/echo-relay"
ASYNC_ECHO = ".build/release/async-echo"
NIO = "Benchmarks/.build/release/nio-peer"
SEND_REF = ".build/c-refs/send_ref"
ECHO_REF = ".build/c-refs/echo_ref"
PINGPONG_REF = ".build/c-refs/pingpong_ref"


def run(command):
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"bench: {' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return elapsed, result.stdout


def sink():
    """A loopback socket that never reads: the kernel drops what overflows its queue."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def send_contenders(port, count, size):
    to = f"127.0.0.1:{port}"
    blast = [BLAST, "--to", to, "--count", str(count), "--size", str(size), "--json"]
    return {
        "C send()": [SEND_REF, "send", "127.0.0.1", str(port), str(count), str(size)],
        "C sendmmsg": [SEND_REF, "sendmmsg", "127.0.0.1", str(port), str(count), str(size)],
        "C GSO": [SEND_REF, "gso", "127.0.0.1", str(port), str(count), str(size)],
        "udp-blast, GSO off": blast + ["--segmentation", "off"],
        "udp-blast (automatic GSO)": blast,
        "SwiftNIO": [NIO, "send", "127.0.0.1", str(port), str(count), str(size)],
        "SwiftNIO, GSO": [NIO, "send", "127.0.0.1", str(port), str(count), str(size), "gso"],
    }


# The order in a round: each pair with a ratio runs next to each other (SwiftNIO GSO one apart).
SEND_ORDER = ["C send()", "SwiftNIO", "udp-blast, GSO off", "C sendmmsg", "udp-blast (automatic GSO)", "C GSO",
              "SwiftNIO, GSO"]


def measure_sends(count, size):
    """Each contender's time in every round; odd rounds run SEND_ORDER backwards, so neither of a pair
    always goes first."""
    _, port = held = sink()
    contenders = send_contenders(port, count, size)
    assert set(SEND_ORDER) == set(contenders), "SEND_ORDER must name every send contender once"
    times = {name: [] for name in contenders}
    for round_index in range(ROUNDS):
        for name in SEND_ORDER if round_index % 2 == 0 else reversed(SEND_ORDER):
            times[name].append(run(contenders[name])[0])
    held_socket = held[0]
    held_socket.close()
    return times


def paired_ratio(times, numerator, denominator):
    """(median of the per-round ratios, their range, ratio of the two medians)."""
    ratios = [a / b for a, b in zip(times[numerator], times[denominator], strict=True)]
    median = math.exp(statistics.median(math.log(r) for r in ratios))
    medians = statistics.median(times[numerator]) / statistics.median(times[denominator])
    return median, (min(ratios), max(ratios)), medians


class Server:
    """A server process; its address from its 'listening on' line on stderr."""

    def __init__(self, command):
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 10
        self.address = None
        while self.address is None and time.time() < deadline:
            line = self.process.stderr.readline()
            match = re.search(r"listening on ([0-9.]+:[0-9]+)", line)
            if match:
                self.address = match.group(1)
        if self.address is None:
            self.process.kill()
            sys.exit(f"bench: {' '.join(command)} did not start")

    def rss_kib(self, field):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def round_trips(server_command, count, client_options):
    server = Server(server_command)
    idle = server.rss_kib("VmRSS")
    _, output = run([BLAST, "--to", server.address, "--count", str(count), "--size", "64", "--expect-replies",
                     "--window", "4096", "--json"] + client_options)
    peak = server.rss_kib("VmHWM")
    server.stop()
    report = json.loads(output)
    if report["lost"] != 0:
        sys.exit(f"bench: {report['lost']} replies lost from {' '.join(server_command)}")
    return report["round_trips_per_s"], idle, peak


def measure_echo(count):
    plain = ["--segmentation", "off"]
    contenders = {
        "C recvmmsg/sendmmsg echo": ([ECHO_REF, "127.0.0.1", "0"], plain),
        "echo-relay echo": ([RELAY, "echo", "--listen", "127.0.0.1:0"], plain),
        "async-echo (actor on the loop, DatagramStream, send)": ([ASYNC_ECHO, "--listen", "127.0.0.1:0"], plain),
        "SwiftNIO echo": ([NIO, "echo", "127.0.0.1", "0"], plain),
        "SwiftNIO NIOAsyncChannel echo": ([NIO, "async-echo", "127.0.0.1", "0"], plain),
        "echo-relay echo --gro, client GSO+GRO": ([RELAY, "echo", "--listen", "127.0.0.1:0", "--gro"], ["--gro"]),
    }
    rates = {name: [] for name in contenders}
    memory = []
    for _ in range(ROUNDS):
        for name, (server, client) in contenders.items():
            rate, idle, peak = round_trips(server, count, client)
            rates[name].append(rate)
            if name == "echo-relay echo":
                memory.append((idle, peak))
    # Memory must not grow with the number of datagrams: the same server under 4 times the load.
    _, idle_long, peak_long = round_trips(contenders["echo-relay echo"][0], 4 * count, plain)
    return {name: statistics.median(values) for name, values in rates.items()}, memory, (idle_long, peak_long)


def measure_paced_latency(seconds=2, rate=20000):
    """Round-trip p50 of a paced udp-blast and of a closed-loop C ping-pong client (one datagram in flight,
    the clock read right before send and right after recv), both against the C echo server at the same time."""
    server = Server([ECHO_REF, "127.0.0.1", "0"])
    host, port = server.address.split(":")
    blast, pingpong = [], []
    for _ in range(ROUNDS):
        reference = subprocess.Popen([PINGPONG_REF, host, port, str(seconds)], stdout=subprocess.PIPE, text=True)
        _, output = run([BLAST, "--to", server.address, "--rate", str(rate), "--duration", str(seconds),
                         "--expect-replies", "--json"])
        reference_output, _ = reference.communicate(timeout=seconds + 30)
        if reference.returncode != 0:
            sys.exit(f"bench: {PINGPONG_REF} failed ({reference.returncode})")
        report = json.loads(output)
        if report["lost"] != 0:
            sys.exit(f"bench: {report['lost']} replies lost in the paced run")
        blast.append(report["rtt_p50_us"])
        pingpong.append(json.loads(reference_output)["rtt_p50_us"])
    server.stop()
    return blast, pingpong


def ordo_p50(report_path, metric, convert):
    """One metric's p50 per benchmark, from the ordo-one suite's markdown output: `convert` turns the
    row's label (which carries the unit) and its p50 cell into the figure."""
    figures = {}
    name = None
    with open(report_path) as report:
        for line in report:
            if line.startswith("### "):
                name = line[4:].strip()
            elif name and line.startswith("| " + metric):
                cells = [cell.strip() for cell in line.split("|")]
                figures[name] = convert(cells[1], int(cells[4].replace(",", "")))  # p50
    return figures


def mallocs(report_path):
    """Malloc (total) p50 per benchmark iteration."""
    return ordo_p50(report_path, "Malloc (total)", lambda label, value: value)


def wall_times(report_path):
    """Time (wall clock) p50 per benchmark iteration, in seconds."""
    units = {"ns": 1e-9, "μs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    return ordo_p50(report_path, "Time (wall clock)",
                    lambda label, value: value * units[re.search(r"\((ns|μs|us|ms|s)\)", label).group(1)])


def instructions(path):
    """Scripts/instructions.sh's lines: "instructions NAME PER-DATAGRAM"."""
    figures = {}
    for line in open(path):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "instructions":
            figures[parts[1]] = float(parts[2])
    return figures


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rows = []  # (workload, contender, figure text, ratio text, target text, met)

    def ratio_row(workload, name, figure, ratio, target, met):
        rows.append((workload, name, figure, ratio, target, met))

    # User-space instructions per datagram (callgrind; repeatable to the instruction, unlike time).
    counts = instructions(sys.argv[2])
    workload = "instructions per datagram (callgrind, 64 B)"
    for name, label in [("c-send-sendmmsg", "C sendmmsg"), ("c-send-gso", "C GSO")]:
        ratio_row(workload, label, f"{counts[name]:.1f}", "", "", None)
    targets = {"single": (70, 80), "copy": (70, 80), "batch": (40, 40), "batch-copy": (40, 40)}
    forms = {"single": "enqueue(writingWith:)", "copy": "enqueue(_:)", "batch": "enqueue(count:writingWith:)",
             "batch-copy": "enqueue(contentsOf:)"}
    for api, (off_target, gso_target) in targets.items():
        for gso, target in [("no-gso", off_target), ("gso", gso_target)]:
            figure = counts[f"send-{api}-{gso}"]
            ratio_row(workload, f"{forms[api]} + drain, GSO {'on' if gso == 'gso' else 'off'}", f"{figure:.1f}", "",
                      f"≤ {target}", figure <= target)
    # The addressed forms, shown without a target: a source per datagram on a connected socket, and what
    # a server on a wildcard address sends (a destination per datagram, with and without the source).
    addressed = [("single-source", "enqueue(metadata:writingWith:), a source address per datagram"),
                 ("wildcard", "enqueue(to:writingWith:) from 0.0.0.0, a destination per datagram"),
                 ("wildcard-source", "enqueue(to:metadata:writingWith:) from 0.0.0.0, a destination and source per datagram")]
    for api, label in addressed:
        for gso in ["no-gso", "gso"]:
            name = f"send-{api}-{gso}"
            if name in counts:
                ratio_row(workload, f"{label}, + drain, GSO {'on' if gso == 'gso' else 'off'}", f"{counts[name]:.1f}", "", "", None)
    for name, c_name, label in [("receive", "c-receive", "BatchedUDPReader"), ("receive-gro", "c-receive-gro", "BatchedUDPReader, GRO")]:
        r = counts[name] / counts[c_name]
        ratio_row(workload, f"{label} ÷ C recvmmsg loop", f"{counts[name]:.1f} vs {counts[c_name]:.1f}", f"{r:.1f}×", "≤ 3×", r <= 3)

    for size, count in [(64, 1_000_000), (1200, 300_000)]:
        times = measure_sends(count, size)
        workload = f"send {count:,} × {size} B"
        for name in ["C send()", "C sendmmsg", "udp-blast, GSO off", "SwiftNIO", "C GSO", "udp-blast (automatic GSO)", "SwiftNIO, GSO"]:
            ratio_row(workload, name, f"{statistics.median(times[name]):.3f} s", "", "", None)
        targeted = size == 64
        limit = 1.05 if size == 64 else 1.10

        def send_ratio(label, numerator, denominator, target, met):
            r, (low, high), medians = paired_ratio(times, numerator, denominator)
            figure = f"rounds {low:.2f}–{high:.2f}×; ratio of medians {medians:.2f}×"
            ratio_row(workload, label, figure, f"{r:.2f}×", target, met(r) if target else None)

        blast_off, blast_gso = "udp-blast, GSO off", "udp-blast (automatic GSO)"
        send_ratio("udp-blast GSO off ÷ C sendmmsg (time)", blast_off, "C sendmmsg", f"≤ {limit:.2f}×", lambda r: r <= limit)
        send_ratio("SwiftNIO ÷ udp-blast GSO off (time)", "SwiftNIO", blast_off, "≥ 1.6×" if targeted else "", lambda r: r >= 1.6)
        send_ratio("C sendmmsg ÷ C GSO (time): the kernel's GSO gain", "C sendmmsg", "C GSO", "", None)
        send_ratio("C sendmmsg ÷ udp-blast GSO (time)", "C sendmmsg", blast_gso, "≥ 4×" if targeted else "", lambda r: r >= 4)
        send_ratio("udp-blast GSO ÷ C GSO (time)", blast_gso, "C GSO", f"≤ {limit:.2f}×", lambda r: r <= limit)
        send_ratio("udp-blast GSO ÷ SwiftNIO GSO (time)", blast_gso, "SwiftNIO, GSO", "≤ 1.00×" if targeted else "", lambda r: r <= 1.0)

    echo_count = 500_000
    rates, memory, (idle_long, peak_long) = measure_echo(echo_count)
    workload = f"echo {echo_count:,} × 64 B round trips"
    for name, rate in rates.items():
        ratio_row(workload, name, f"{rate:,.0f}/s", "", "", None)
    reference = rates["C recvmmsg/sendmmsg echo"]
    r = rates["echo-relay echo"] / reference
    ratio_row(workload, "echo-relay ÷ C echo (rate, same client)", "", f"{r:.2f}×", "≥ 0.9×", r >= 0.9)
    async_rate = rates["async-echo (actor on the loop, DatagramStream, send)"]
    r = async_rate / rates["echo-relay echo"]
    ratio_row(workload, "async-echo ÷ echo-relay echo (rate)", "", f"{r:.2f}×", "≥ 0.8×", r >= 0.8)
    r = async_rate / rates["SwiftNIO NIOAsyncChannel echo"]
    ratio_row(workload, "async-echo ÷ SwiftNIO NIOAsyncChannel echo (rate)", "", f"{r:.2f}×", "≥ 1.5×", r >= 1.5)
    r = rates["echo-relay echo --gro, client GSO+GRO"] / reference
    ratio_row(workload, "echo-relay GSO+GRO ÷ C echo (rate)", "", f"{r:.2f}×", "≥ 2×", r >= 2)
    paced, pingpong = measure_paced_latency()
    workload = "round-trip p50, 64 B, against the C echo, both clients at once"
    ratio_row(workload, "udp-blast --rate 20000 (kernel receive timestamps)",
              f"{statistics.median(paced):.1f} µs (rounds {min(paced):.1f}–{max(paced):.1f})", "", "", None)
    ratio_row(workload, "C ping-pong client (one in flight)",
              f"{statistics.median(pingpong):.1f} µs (rounds {min(pingpong):.1f}–{max(pingpong):.1f})", "", "", None)
    r = statistics.median(paced) / statistics.median(pingpong)
    ratio_row(workload, "udp-blast paced ÷ C ping-pong (p50)", "", f"{r:.2f}×", "≤ 3×", r <= 3)

    growth = max(peak - idle for idle, peak in memory)
    ratio_row("memory", f"echo-relay peak RSS − RSS at start, {echo_count:,} round trips", f"{growth:,} KiB", "", "≤ 4,096 KiB", growth <= 4096)
    peak = max(p for _, p in memory)
    ratio_row("memory", f"echo-relay peak RSS, {4 * echo_count:,} vs {echo_count:,} round trips",
              f"{peak_long:,} vs {peak:,} KiB", "", "no growth (≤ +1,024 KiB)", peak_long <= peak + 1024)

    figures = mallocs(sys.argv[1])
    # Per-datagram metadata (ordo-one, same run): what a source address per datagram costs a send,
    # and what a wildcard listener answering from each datagram's destination costs an echo server.
    # The ratio of each pair is taken per pass (the suite's own, then the metadata passes) and the
    # median shown.
    passes = [wall_times(path) for path in [sys.argv[1]] + sys.argv[3:]]
    datagrams_per_iteration = 10000

    def paired(numerator, denominator, invert=False):
        """Per pass, (numerator time, denominator time, ratio); invert gives a rate ratio."""
        found = []
        for times in passes:
            a, b = times.get(numerator), times.get(denominator)
            if a and b:
                found.append((a, b, b / a if invert else a / b))
        return found

    def pair_row(name, found, target, met):
        if not found:
            return
        r = statistics.median(ratio for _, _, ratio in found)
        figure = "; ".join(f"{a * 1e3:.2f} vs {b * 1e3:.2f} ms" for a, b, _ in found)
        if len(found) > 1:
            figure += " (passes: " + ", ".join(f"{ratio:.2f}×" for _, _, ratio in found) + "; median)"
        ratio_row("metadata (ordo-one)", name, figure, f"{r:.2f}×", target, met(r) if met else None)

    for segmentation in ["off", "on"]:
        # As a wildcard server sends: a destination per datagram, with or without the source to answer from.
        pair_row(f"send 64 B GSO {segmentation}, wildcard socket: with a source per datagram ÷ without (time)",
                 paired(f"send 64 B, GSO {segmentation}, wildcard socket, destination and source address per datagram, {datagrams_per_iteration} datagrams",
                        f"send 64 B, GSO {segmentation}, wildcard socket, destination per datagram, {datagrams_per_iteration} datagrams"),
                 "≤ 1.10×", lambda r: r <= 1.10)
        # On a connected socket the kernel caches the route unless a datagram names its source, so this
        # pair mostly measures the kernel's route lookup per sourced datagram: shown, no target.
        pair_row(f"send 64 B GSO {segmentation}, connected socket: with a source per datagram ÷ without (time)",
                 paired(f"send 64 B, GSO {segmentation}, source address per datagram, {datagrams_per_iteration} datagrams",
                        f"send 64 B, GSO {segmentation}, {datagrams_per_iteration} datagrams"),
                 "", None)
    pair_row("echo via a wildcard listener with metadata ÷ on an explicit address (rate)",
             paired(f"echo round trips 64 B, window 256, wildcard listener with metadata, {datagrams_per_iteration} datagrams",
                    f"echo round trips 64 B, window 256, {datagrams_per_iteration} datagrams", invert=True),
             "≥ 0.9×", lambda r: r >= 0.9)

    for name, total in sorted(figures.items()):
        per = re.search(r"([0-9]+) datagrams", name)
        datagrams = int(per.group(1)) if per else 1
        # The async echo owns a small object per received batch (a pooled buffer's handle): a target of
        # its own, 0.05 per datagram; every callback path allocates nothing.
        limit = 0.05 if name.startswith("async") else 0.01
        ratio_row("mallocs (ordo-one, steady state)", name, f"{total} per iteration", f"{total / datagrams:.4f} per datagram",
                  f"≤ {limit} per datagram" if limit > 0.01 else "0 per datagram (< 0.01)", total / datagrams < limit if limit == 0.01 else total / datagrams <= limit)

    print(f"\n| Workload | Contender or ratio | Figure | Ratio | Target | Met |")
    print("|---|---|---|---|---|---|")
    for workload, name, figure, ratio, target, met in rows:
        verdict = "" if met is None else ("met" if met else "**not met**")
        print(f"| {workload} | {name} | {figure} | {ratio} | {target} | {verdict} |")
    print(f"\nMedians of {ROUNDS} rounds, contenders one after another within each round; a send ratio is the "
          f"median of its per-round ratios. "
          f"{os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().release}.")


if __name__ == "__main__":
    main()
