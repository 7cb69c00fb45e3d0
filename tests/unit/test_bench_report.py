"""The bench report renders any payload size ``bench.py --sizes`` takes.

``--sizes`` accepts any byte count, but the report looked each one up in a table of five
names: a run with, say, ``--sizes=2000000`` measured for its whole time limit, then raised
KeyError while rendering, before the records were written (bench.py now writes them first).
The report module is loaded from its file, with a stand-in for the ``bench`` module it
imports (putting scripts/bench on sys.path would let its profile.py shadow the standard one).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPORT = os.path.join(ROOT, "scripts", "bench", "report.py")


def load_report(monkeypatch: pytest.MonkeyPatch) -> Any:
    stand_in = types.ModuleType("bench")
    stand_in.machine = lambda: "a test machine"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench", stand_in)
    spec = importlib.util.spec_from_file_location("easymesh_bench_report_under_test", REPORT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(size: int) -> dict[str, Any]:
    return {
        "section": "throughput", "system": "easymesh", "transport": "unix", "size": size,
        "rep": 0, "rate": 0.0, "in_flight": 1,
        "client": {"msgs_per_s": 100.0, "sent": 1000},
        "server": {"msgs_per_s": 90.0, "mb_per_s": 180.0, "received": 900},
    }


def test_a_size_without_a_name_is_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    report = load_report(monkeypatch)
    bench = types.SimpleNamespace(
        records=[record(1_000_000), record(2_000_000)], systems=["easymesh"], transports=["unix"],
        reps=1, seconds=1.0, warmup=0.0, problems=[], skipped=[],
    )
    noise = {"wall_s": 1.0, "busy_cpu_s": 1.0, "ours_cpu_s": 1.0, "other_pct_of_machine": 0.0}
    text = report.render(bench, noise)
    assert "| 1 MB | unix |" in text
    assert "| 2,000,000 B | unix |" in text
