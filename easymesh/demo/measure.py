"""Measurement pieces of the speedtest: the message format, a pacer, percentiles, and
what a receiver counts in one run. Kept apart from the commands in speedtest.py.

Messages: ``{"k": kind, "seq": n, "t": send time, "data": payload}`` (``raw`` codec: a
packed ``<Bqd`` header then the payload); kind is WARMUP, DATA or END (END carries the
sender's count). Send times come from CLOCK_MONOTONIC, one clock for every process on
a Linux host.
"""

from __future__ import annotations

import json
import struct
import time
from array import array
from typing import Any

WARMUP, DATA, END = 0, 1, 2
N_END = 3
_RAW = struct.Struct("<Bqd")  # kind, seq, send time
_clock = time.clock_gettime
_MONO = time.CLOCK_MONOTONIC


def now() -> float:
    """CLOCK_MONOTONIC in seconds: comparable between processes on one Linux host."""
    return _clock(_MONO)


# -- messages ---------------------------------------------------------------------------------


def make_payload(size: int, codec: str) -> Any:
    return "x" * size if codec == "json" else b"x" * size


def make_msg(codec: str, kind: int, seq: int, payload: Any, extra: dict[str, Any] | None = None) -> Any:
    t = now()
    if codec == "raw":
        head = _RAW.pack(kind, seq, t)
        if extra:
            return head + json.dumps(extra).encode()
        return head + payload
    msg = {"k": kind, "seq": seq, "t": t, "data": payload}
    if extra:
        msg.update(extra)
    return msg


def parse_msg(data: Any) -> tuple[int, int, float, int, dict[str, Any]]:
    """(kind, seq, send time, payload length, extra fields) of a received message."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        kind, seq, t = _RAW.unpack_from(data)
        rest = data[_RAW.size:]
        extra = json.loads(bytes(rest)) if kind == END and rest else {}
        return kind, seq, t, len(data) - _RAW.size, extra
    return data["k"], data["seq"], data["t"], len(data["data"]), data


def percentile(sorted_values: Any, q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[i]


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 1)


class Pacer:
    """Sleeps so that calls happen ``rate`` times a second on an absolute schedule."""

    def __init__(self, rate: float) -> None:
        self.period = 1.0 / rate if rate > 0 else 0.0
        self.next = now()

    def wait(self) -> None:
        if not self.period:
            return
        self.next += self.period
        delay = self.next - now()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.1:  # far behind: do not burst to catch up
            self.next = now()


# -- receiving --------------------------------------------------------------------------------


class RunStats:
    """What the receiver counts during one run."""

    def __init__(self) -> None:
        self.first = 0.0
        self.last = 0.0
        self.received = 0
        self.warmup = 0
        self.bytes = 0
        self.max_seq = -1
        self.out_of_order = 0
        self.lat = array("d")
        self.cpu_first = 0.0
        self.started = now()
        self.last_any = self.started

    def report(self, end: dict[str, Any] | None) -> dict[str, Any]:
        n = self.received
        span = self.last - self.first
        rate = (n - 1) / span if n > 1 and span > 0 else 0.0
        sent = int(end["sent"]) if end else None
        seen = max(self.max_seq + 1, n)
        drops = (sent if sent is not None else seen) - n
        lat = sorted(self.lat)
        size = self.bytes / n if n else 0
        cpu = time.process_time() - self.cpu_first if n else 0.0
        return {
            "role": "recv", "received": n, "sent": sent, "drops": drops,
            "drop_pct": round(100.0 * drops / sent, 2) if sent else None,
            "out_of_order": self.out_of_order, "warmup_received": self.warmup,
            "msgs_per_s": round(rate, 1), "mb_per_s": round(rate * size / 1e6, 2),
            "lat_p50_us": _us(percentile(lat, 50)), "lat_p99_us": _us(percentile(lat, 99)),
            "lat_max_us": _us(lat[-1]) if lat else float("nan"),
            "span_s": round(span, 4), "message_size": int(size), "complete": end is not None,
            "cpu_us_per_msg": round(1e6 * cpu / n, 2) if n else None,
            "run": end.get("run") if end else None,
        }
