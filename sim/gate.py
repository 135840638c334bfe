"""Exit codes a CI can gate on, as k6 thresholds do.

k6 exits 99 when a threshold fails (k6 ``errext/exitcodes``: ``ThresholdsHaveFailed``); scalelab
keeps the Unix convention its other commands use instead: 0 when the run meets its SLO or the
scenario has none, 1 when it misses one, 2 for bad input (``sim.console.fail``), 130 when
interrupted. The checks themselves are ``sim.engine.slo_checks``; this module only judges and
words them, on the summary's plain data, so a real-cluster run is judged the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Exit statuses of ``scalelab run`` (README "Exit codes").
OK = 0
SLO_MISSED = 1
BAD_INPUT = 2
INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


def exit_code(slo: Mapping[str, Any] | None) -> int:
    """``SLO_MISSED`` when the summary's SLO block says a check failed, else ``OK``."""
    if not slo:
        return OK
    return OK if slo.get("met", True) else SLO_MISSED


def check_lines(slo: Mapping[str, Any] | None) -> list[str]:
    """One line per check, value against limit: ``MISS p95 3.1 s (limit <= 2 s)``."""
    if not slo:
        return []
    lines = []
    for name, check in slo.get("checks", {}).items():
        unit = "" if name == "error_rate" else " s"
        value, limit = check["value"], check["limit"]
        shown = "- (no request completed)" if value is None else f"{_number(name, value)}{unit}"
        word = "ok  " if check["met"] else "MISS"
        lines.append(f"{word} {name} {shown} (limit <= {_number(name, limit)}{unit})")
    return lines


def verdict(slo: Mapping[str, Any] | None) -> str:
    """The one-line outcome printed after the checks."""
    if not slo:
        return "no SLO in the scenario: exit 0"
    if exit_code(slo) == OK:
        return "SLO met: exit 0"
    missed = [n for n, c in slo.get("checks", {}).items() if not c["met"]]
    return f"SLO missed ({', '.join(missed)}): exit 1"


def _number(name: str, value: float) -> str:
    if name == "error_rate":
        return f"{value:.4%}"
    return f"{value:.4g}"
