"""Turn the records of one bench run into the Markdown report (medians, ratios, targets)."""

from __future__ import annotations

import datetime
import statistics
from typing import Any

SIZE_NAMES = {0: "0 B", 64: "64 B", 1000: "1 kB", 100_000: "100 kB", 1_000_000: "1 MB"}
NAMES = {"easymesh": "easymesh", "baseline": "easymesh before", "rosy": "rosy 0.8.3",
         "zmq": "pyzmq", "raw": "raw socket"}


def size_name(n: int) -> str:
    """A payload size as the tables show it: its usual name, else its byte count
    (``bench.py --sizes`` takes any size)."""
    return SIZE_NAMES.get(n) or f"{n:,} B"


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fr(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


class Data:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def runs(self, section: str, system: str, transport: str, size: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("section") == section and r["system"] == system
                and r["transport"] == transport and (size is None or r["size"] == size)]

    def values(self, section: str, system: str, transport: str, size: int | None, side: str,
               key: str, failed_as_zero: bool = False) -> list[float]:
        out = []
        for r in self.runs(section, system, transport, size):
            v = (r.get(side) or {}).get(key)
            if v is None and failed_as_zero and "error" in r:
                v = 0.0
            if v is not None:
                out.append(float(v))
        return out

    def drop_pcts(self, section: str, system: str, transport: str, size: int) -> list[float]:
        """Drops in % from both sides: 1 - received at the receiver / sent by the sender
        (the END message that carries the count can itself be dropped)."""
        out = []
        for r in self.runs(section, system, transport, size):
            sent = (r.get("client") or {}).get("sent")
            got = (r.get("server") or {}).get("received")
            if sent and got is not None:
                out.append(100.0 * max(0, sent - got) / sent)
        return out

    def m(self, *a: Any, **k: Any) -> float | None:
        return med(self.values(*a, **k))


def render(bench: Any, noise: dict[str, Any]) -> str:
    from bench import machine  # noqa: PLC0415  (same folder)

    d = Data(bench.records)
    systems = bench.systems
    transports = bench.transports
    L: list[str] = []
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    L += [f"# easymesh benchmark, {date}", "",
          f"Machine: {machine()}.  ",
          f"Run: {bench.reps} repetition(s) x {bench.seconds} s per measurement (+{bench.warmup} s warm-up), "
          f"systems interleaved, order rotated per repetition; medians over repetitions (a failed run "
          f"counts as 0 msgs/s). Loopback inside a private network namespace; `unix` = Unix stream "
          f"sockets (zmq `ipc://`), `tcp` = TCP on 127.0.0.1 (easymesh `transport='tcp'`).  ",
          f"Noise: the bench took {noise['wall_s']} s; other processes on the machine used "
          f"{noise['other_pct_of_machine']}% of its {__import__('os').cpu_count()} CPUs meanwhile "
          f"(whole machine busy {noise['busy_cpu_s']} CPU-s, this bench {noise['ours_cpu_s']} CPU-s). "
          f"Sender and receiver share 2 cores, so every figure is CPU-bound and moves with that load: "
          f"compare ratios within this run, not absolute numbers across runs.", ""]

    targets: list[tuple[str, str, str]] = []

    if any(r.get("section") == "throughput" for r in bench.records):
        L += ["## Topics at full speed: delivered msgs/s at the receiver (MB/s; drops)", "",
              "| size | transport | " + " | ".join(NAMES[s] for s in systems) + " | "
              + " | ".join(f"easymesh/{NAMES[s]}" for s in systems if s != "easymesh") + " |",
              "|---|---|" + "---:|" * (len(systems) + len([s for s in systems if s != "easymesh"]))]
        for size in sorted({r["size"] for r in bench.records if r.get("section") == "throughput"}):
            for tr in transports:
                cells, rates = [], {}
                for s in systems:
                    vals = d.values("throughput", s, tr, size, "server", "msgs_per_s", True)
                    rate = med(vals)
                    rates[s] = rate
                    mb = d.m("throughput", s, tr, size, "server", "mb_per_s")
                    drop = med(d.drop_pcts("throughput", s, tr, size))
                    spread = f" [{min(vals):,.0f}–{max(vals):,.0f}]" if len(vals) > 1 else ""
                    cells.append(f"{fmt(rate)}{spread} ({fmt(mb, 1)} MB/s; {fmt(drop, 0)}%)"
                                 if rate is not None else "—")
                rs = [fr(ratio(rates.get("easymesh"), rates.get(s))) for s in systems if s != "easymesh"]
                L.append(f"| {size_name(size)} | {tr} | " + " | ".join(cells) + " | " + " | ".join(rs) + " |")
                em, ro, zq = rates.get("easymesh"), rates.get("rosy"), rates.get("zmq")
                if size in (0, 1000) and "rosy" in systems:
                    r = ratio(em, ro)
                    targets.append((f"{size_name(size)} {tr}: delivered ≥ 5× rosy", fr(r),
                                    verdict(r is not None and r >= 5)))
                if size == 1_000_000:
                    if "rosy" in systems:
                        r = ratio(em, ro)
                        targets.append((f"1 MB {tr}: delivered ≥ 3× rosy", fr(r), verdict(r is not None and r >= 3)))
                    if "zmq" in systems:
                        r = ratio(em, zq)  # same size: msgs/s ratio = MB/s ratio
                        targets.append((f"1 MB {tr}: ≥ 0.5× pyzmq MB/s", fr(r), verdict(r is not None and r >= 0.5)))
        L += ["", "Sent/s at the sender (what the API accepted; the rest was dropped on the way):", ""]
        L += ["| size | transport | " + " | ".join(NAMES[s] for s in systems) + " |",
              "|---|---|" + "---:|" * len(systems)]
        for size in sorted({r["size"] for r in bench.records if r.get("section") == "throughput"}):
            for tr in transports:
                L.append(f"| {size_name(size)} | {tr} | " + " | ".join(
                    fmt(d.m("throughput", s, tr, size, "client", "msgs_per_s")) for s in systems) + " |")
        L.append("")

    if any(r.get("section") == "paced" for r in bench.records):
        L += ["## One-way latency, paced 1,000 msg/s, 1 kB (µs, p50 / p99)", "",
              "| transport | " + " | ".join(NAMES[s] for s in systems) + " | easymesh/pyzmq p50 | easymesh/rosy p50 |",
              "|---|" + "---:|" * (len(systems) + 2)]
        for tr in transports:
            p50 = {s: d.m("paced", s, tr, 1000, "server", "lat_p50_us") for s in systems}
            p99 = {s: d.m("paced", s, tr, 1000, "server", "lat_p99_us") for s in systems}
            L.append(f"| {tr} | " + " | ".join(f"{fmt(p50[s])} / {fmt(p99[s])}" for s in systems)
                     + f" | {fr(ratio(p50.get('easymesh'), p50.get('zmq')))} | {fr(ratio(p50.get('easymesh'), p50.get('rosy')))} |")
            if "rosy" in systems:
                r = ratio(p50.get("easymesh"), p50.get("rosy"))
                targets.append((f"unloaded one-way p50 1 kB {tr}: below rosy", fr(r), verdict(r is not None and r < 1)))
            if "zmq" in systems:
                r = ratio(p50.get("easymesh"), p50.get("zmq"))
                targets.append((f"unloaded one-way p50 1 kB {tr}: ≤ 2× pyzmq", fr(r), verdict(r is not None and r <= 2)))
        L.append("")

    for section, title in (("rtt", "Service round trip, sequential, 64 B"),
                           ("inflight", "Services with 100 requests in flight, 64 B")):
        if not any(r.get("section") == section for r in bench.records):
            continue
        L += [f"## {title}: requests/s (RTT p50 / p99 µs)", "",
              "| transport | " + " | ".join(NAMES[s] for s in systems) + " | easymesh/pyzmq | easymesh/rosy |",
              "|---|" + "---:|" * (len(systems) + 2)]
        for tr in transports:
            rps = {s: d.m(section, s, tr, 64, "client", "req_per_s", failed_as_zero=True) for s in systems}
            p50 = {s: d.m(section, s, tr, 64, "client", "rtt_p50_us") for s in systems}
            p99 = {s: d.m(section, s, tr, 64, "client", "rtt_p99_us") for s in systems}
            if section == "rtt":
                rz, rr = ratio(p50.get("easymesh"), p50.get("zmq")), ratio(p50.get("easymesh"), p50.get("rosy"))
                note = " (RTT p50 ratio)"
            else:
                rz, rr = ratio(rps.get("easymesh"), rps.get("zmq")), ratio(rps.get("easymesh"), rps.get("rosy"))
                note = " (req/s ratio)"
            L.append(f"| {tr} | " + " | ".join(f"{fmt(rps[s])} ({fmt(p50[s])} / {fmt(p99[s])})" for s in systems)
                     + f" | {fr(rz)}{note} | {fr(rr)}{note} |")
            if section == "rtt" and "zmq" in systems:
                targets.append((f"service RTT p50 64 B {tr}: ≤ 1.3× pyzmq REQ/REP", fr(rz), verdict(rz is not None and rz <= 1.3)))
            if section == "inflight" and "rosy" in systems:
                targets.append((f"100 in flight {tr}: ≥ 5× rosy req/s", fr(rr), verdict(rr is not None and rr >= 5)))
        L.append("")

    cost_rows = []
    for label, section, size in (("1 kB, full speed", "throughput", 1000),
                                 ("100 kB, full speed", "throughput", 100_000),
                                 ("1 kB, paced 1,000/s", "paced", 1000),
                                 ("100 kB, paced 1,000/s", "sendcost", 100_000)):
        row = []
        for s in ("easymesh", "zmq"):
            if s not in systems:
                continue
            p50 = d.m(section, s, "unix", size, "client", "send_p50_us")
            p99 = d.m(section, s, "unix", size, "client", "send_p99_us")
            row.append(f"{fmt(p50, 1)} / {fmt(p99, 1)}")
        if any(c != "— / —" for c in row):
            cost_rows.append(f"| {label} | " + " | ".join(row) + " |")
    if cost_rows:
        cols = [NAMES[s] for s in ("easymesh", "zmq") if s in systems]
        L += ["## Cost of send() in the caller's thread, Unix socket (µs, p50 / p99)", "",
              "Includes encoding (pickle of the message dict) for easymesh; for pyzmq the same pickle.dumps "
              "plus `socket.send`.", "",
              "| workload | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols), *cost_rows, ""]

    coord = [r["result"] for r in bench.records if r.get("section") == "coordinator"]
    if coord:
        c = coord[0]
        L += ["## Coordinator", "",
              f"{c['nodes']} nodes ({c['procs']} processes x {c['nodes'] // c['procs']} threads, started at once): "
              f"all joined in **{c['join_s']} s** (median; runs: {', '.join(str(r['join_s']) for r in c['runs'])}); "
              f"one topology change (a new listener) reached all of them in **{c['change_ms']} ms** "
              f"(runs: {', '.join(str(r['change_ms']) for r in c['runs'])}); "
              f"errors {c['errors']}, nodes that never saw the change {c['missing']}.", ""]
        targets.append(("200 nodes join < 2 s", f"{c['join_s']} s", verdict(c["join_s"] < 2 and not c["errors"])))
        targets.append(("a topology change reaches all < 200 ms", f"{c['change_ms']} ms",
                        verdict(c["change_ms"] < 200 and not c["missing"])))

    if "baseline" in systems:
        L += before_after(d, transports)
    if targets:
        L += ["## Targets of issue 6", "", "| target | measured | |", "|---|---:|---|"]
        L += [f"| {t} | {m} | {v} |" for t, m, v in targets]
        L.append("")
    if bench.problems or bench.skipped:
        L += ["## Problems", ""]
        L += [f"- {p}" for p in bench.problems]
        if bench.skipped:
            L.append(f"- not run (time limit): {len(bench.skipped)} measurements, e.g. {bench.skipped[0]}")
        L.append("")
    return "\n".join(L)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


#: The figures compared before/after: (label, section, size, side, key, higher is better).
FIGURES = [
    *((f"topics {SIZE_NAMES[n]}, msgs/s", "throughput", n, "server", "msgs_per_s", True)
      for n in (0, 1000, 100_000, 1_000_000)),
    ("one-way p50 paced 1 kB, µs", "paced", 1000, "server", "lat_p50_us", False),
    ("sequential requests, RTT p50 µs", "rtt", 64, "client", "rtt_p50_us", False),
    ("sequential requests, req/s", "rtt", 64, "client", "req_per_s", True),
    ("100 requests in flight, req/s", "inflight", 64, "client", "req_per_s", True),
]


def paired(d: Data, section: str, transport: str, size: int, side: str, key: str,
           failed_as_zero: bool = False) -> list[float]:
    """easymesh / baseline for each repetition in which both were measured (next to each
    other in time: a change in the machine's load hits both sides of a pair alike). A failed
    run counts as 0 with ``failed_as_zero`` (rates, as in the other tables), else its pair
    is left out."""
    def by_rep(system: str) -> dict[int, float]:
        out = {}
        for r in d.runs(section, system, transport, size):
            v = (r.get(side) or {}).get(key)
            if v is None and failed_as_zero and "error" in r:
                v = 0.0
            if v is not None:
                out[r["rep"]] = float(v)
        return out
    a, b = by_rep("easymesh"), by_rep("baseline")
    return [a[k] / b[k] for k in sorted(a) if k in b and b[k]]


def before_after(d: Data, transports: list[str]) -> list[str]:
    """Every figure as a ratio, after/before, from one run: the median of the per-repetition
    ratios (with their range), and the ratio of the medians. Oriented so that > 1 is better
    (a latency ratio is inverted)."""
    L = ["## Before/after (easymesh / easymesh before, > 1 is better)", "",
         "Per figure: median of the per-repetition ratios [their range], and the ratio of the "
         "two medians. A pair is measured back to back, so it sees the same machine load.", "",
         "| figure | transport | paired median [range] | ratio of medians | pairs |", "|---|---|---:|---:|---:|"]
    for label, section, size, side, key, higher in FIGURES:
        for tr in transports:
            ratios = paired(d, section, tr, size, side, key, failed_as_zero=higher)
            if not ratios:
                continue
            ratios = ratios if higher else [1 / r for r in ratios if r]
            of_medians = ratio(d.m(section, "easymesh", tr, size, side, key), d.m(section, "baseline", tr, size, side, key))
            if of_medians is not None and not higher and of_medians:
                of_medians = 1 / of_medians
            L.append(f"| {label} | {tr} | {fr(statistics.median(ratios))} [{min(ratios):.2f}–{max(ratios):.2f}] "
                     f"| {fr(of_medians)} | {len(ratios)} |")
    return L + [""]
