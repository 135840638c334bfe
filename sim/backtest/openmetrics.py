"""OpenMetrics text files: write recorded series, read them back.

Writing follows the OpenMetrics 1.0 text format (one family per ``# TYPE`` line, a counter's
samples named ``<family>_total``, timestamps in seconds, ``# EOF`` last), which
``promtool tsdb create-blocks-from openmetrics`` backfills into a Prometheus TSDB. Reading uses
``prometheus_client``'s OpenMetrics parser (the Prometheus project's own Python client), so a
file that parser rejects is refused with its message.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sim.backtest.series import Series, SeriesSet
from sim.errors import UserError

#: Families written as counters: (family name, sample name).
COUNTERS = {"container_cpu_usage_seconds": "container_cpu_usage_seconds_total"}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(series: Iterable[Series], help_text: dict[str, str] | None = None) -> str:
    """The OpenMetrics text of ``series``, grouped by family, each series in time order."""
    families: dict[str, list[Series]] = {}
    for s in series:
        family = next((f for f, sample in COUNTERS.items() if sample == s.name), s.name)
        families.setdefault(family, []).append(s)
    lines: list[str] = []
    for family in sorted(families):
        kind = "counter" if family in COUNTERS else "gauge"
        if family.startswith(":"):
            kind = "unknown"  # TF Serving's own names (":tensorflow:serving:...") are untyped
        lines.append(f"# TYPE {family} {kind}")
        if help_text and family in help_text:
            lines.append(f"# HELP {family} {_escape(help_text[family])}")
        for s in sorted(families[family], key=lambda x: x.labels):
            tags = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels)
            head = f"{s.name}{{{tags}}}" if tags else s.name
            lines.extend(
                f"{head} {_number(v)} {t:.3f}" for t, v in zip(s.times, s.values, strict=True)
            )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def read(path: Path) -> SeriesSet:
    """Every sample of an OpenMetrics file, by series. A sample without a timestamp is refused:
    a recording needs to say when each value was seen.

    prometheus_client's parser checks the file's structure and each distinct series (name and
    labels) once: it parses the metadata lines and the first sample of every series. The rest
    of a series' lines differ only in value and timestamp, which are read here per line
    (prometheus_client alone spends ~35 us a sample, minutes on a day of a fleet).
    """
    try:
        text = path.read_text()
    except OSError as error:
        raise UserError(f"--openmetrics {path}: cannot read it ({error.strerror})") from None
    heads: dict[str, tuple[str, dict[str, str]]] = {}
    firsts: list[str] = []
    rows: list[tuple[str, str, str, int]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            firsts.append(line)
            continue
        parts = line.rsplit(" ", 2)
        if len(parts) != 3 or " # " in line:
            raise UserError(
                f"--openmetrics {path}:{number}: expected 'name{{labels}} value timestamp' "
                f"(no exemplars), got {line[:120]!r}"
            )
        head, value, ts = parts
        if head not in heads:
            heads[head] = ("", {})
            firsts.append(line)
        rows.append((head, value, ts, number))
    _check_structure(path, "\n".join(firsts) + "\n", heads)
    out = SeriesSet()
    targets = {head: out.series(name, labels) for head, (name, labels) in heads.items()}
    for head, value, ts, number in rows:
        series = targets[head]
        try:
            at, number_value = float(ts), float(value)
        except ValueError:
            raise UserError(
                f"--openmetrics {path}:{number}: value {value!r} or timestamp {ts!r} is not a "
                "number"
            ) from None
        series.times.append(at)
        series.values.append(number_value)
    return out


def _check_structure(path: Path, text: str, heads: dict[str, tuple[str, dict[str, str]]]) -> None:
    """Parse metadata and first samples with prometheus_client; fill ``heads`` from it (the
    parser yields the samples in file order, one per distinct head)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    order = list(heads)
    parsed = 0
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.timestamp is None:
                    raise UserError(
                        f"--openmetrics {path}: sample {sample.name}{sample.labels} has no "
                        "timestamp; a recording needs one on every sample"
                    )
                heads[order[parsed]] = (sample.name, dict(sample.labels))
                parsed += 1
    except ValueError as error:
        raise UserError(f"--openmetrics {path}: not valid OpenMetrics text ({error})") from None
    if parsed != len(order):
        raise UserError(f"--openmetrics {path}: cannot read series {order[parsed][:120]!r}")
