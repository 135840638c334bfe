"""Reports that explain a run: Locust's CSV files, failures by reason, per-pod series, the
event story, the diagnosis and report.html, read back as files (no browser)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.diagnosis import slo_spans
from sim.engine import simulate
from sim.events import filter_kind, story
from sim.loader import load_scenario
from sim.locust_csv import bucket_response_time, readable_percentiles, write_locust_csv
from sim.recorder import LOCUST_PERCENTILES, FailureReason, RequestRecorder
from sim.report import moving_average, render, time_unit
from sim.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"


@pytest.fixture(scope="module")
def lab() -> Trace:
    return simulate(load_scenario(LAB, ["duration=12m"]))


@pytest.fixture(scope="module")
def stranded() -> Trace:
    """No node matches the pods' nodeSelector: every request is refused."""
    overrides = ["start=cold", 'deployment.nodeSelector={gpu: "t4"}', "duration=3m"]
    return simulate(load_scenario(LAB, overrides))


@pytest.fixture(scope="module")
def locust_columns() -> dict[str, list[str]]:
    """The column lists of the installed Locust, read in a child (importing locust patches
    the interpreter with gevent)."""
    code = (
        "import json\n"
        "from locust.stats import StatsCSV, StatsCSVFileWriter, PERCENTILES_TO_REPORT\n"
        "class Env: stats = None; runner = None\n"
        "import tempfile, os\n"
        "d = tempfile.mkdtemp()\n"
        "w = StatsCSVFileWriter(Env(), PERCENTILES_TO_REPORT, os.path.join(d, 'x'))\n"
        "print(json.dumps({'stats': w.requests_csv_columns, "
        "'history': w.stats_history_csv_columns, 'failures': w.failures_columns, "
        "'percentiles': PERCENTILES_TO_REPORT}))\n"
        "w.close_files()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_locust_files_have_locusts_columns_and_rows(
    lab: Trace, locust_columns: dict[str, list[str]], tmp_path: Path
) -> None:
    assert list(LOCUST_PERCENTILES) == locust_columns["percentiles"]
    assert lab.locust is not None
    stats, history, failures = write_locust_csv(lab.locust, tmp_path / "lab")
    rows = _rows(stats)
    assert rows[0] == locust_columns["stats"]
    assert [r[:2] for r in rows[1:]] == [
        ["POST", "/v1/models/image_classifier/versions/1:predict"],
        ["", "Aggregated"],
    ]
    summary = lab.summary
    aggregated = dict(zip(rows[0], rows[2], strict=True))
    assert int(aggregated["Request Count"]) == summary["requests_ok"] + summary["requests_failed"]
    assert int(aggregated["Failure Count"]) == summary["requests_failed"]
    # The percentiles never decrease and the median is Locust's rounded p50.
    pct = [int(aggregated[name]) for name in readable_percentiles()]
    assert pct == sorted(pct)
    assert abs(pct[0] - summary["latency_p50"] * 1000) <= 0.06 * summary["latency_p50"] * 1000
    hist = _rows(history)
    assert hist[0] == locust_columns["history"]
    assert len(hist) - 1 == len(lab)  # one row per second
    counts = [int(r[hist[0].index("Total Request Count")]) for r in hist[1:]]
    assert counts == sorted(counts) and counts[-1] <= int(aggregated["Request Count"])
    users = [int(r[1]) for r in hist[1:]]
    assert users == [int(u or 0) for u in lab.column("users")]
    assert _rows(failures) == [locust_columns["failures"]]  # the lab fails nothing


def test_failures_by_reason_add_up_everywhere(stranded: Trace, tmp_path: Path) -> None:
    s = stranded.summary
    assert s["requests_failed"] == s["requests_total"] > 0
    assert s["failures_by_reason"] == {"no_endpoint": s["requests_failed"]}
    assert stranded.locust is not None
    _, _, failures = write_locust_csv(stranded.locust, tmp_path / "x")
    rows = _rows(failures)
    assert len(rows) == 2 and int(rows[1][3]) == s["requests_failed"]
    assert "Connection refused" in rows[1][2]
    assert rows[1][4].startswith("1970-01-01T00:0")  # simulated time from the epoch
    assert any("100% of requests failed" in c for c in s["causes"])
    assert any("Pending from 0 s to the end" in c for c in s["causes"])


def test_recorder_counts_failures_in_locusts_statistics() -> None:
    r = RequestRecorder(10)
    for t in range(1, 4):
        r.complete(t + 0.5, 0.2)
    r.fail(5.0, FailureReason.TIMEOUT, 30.0)
    r.snapshot(6)
    c = r.cumulative[6]
    assert c is not None and c.requests == 4 and c.failures == 1
    assert c.percentiles is not None
    assert c.percentiles[-1] == pytest.approx(30.0, rel=0.01)  # 100%: the timed-out one
    assert c.percentiles[0] == pytest.approx(0.2, rel=0.01)
    assert r.failures[FailureReason.TIMEOUT].count == 1


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_bucket_response_time_keeps_two_significant_digits(ms: float) -> None:
    key = bucket_response_time(ms)
    assert abs(key - ms) <= max(0.5, 0.05 * ms) + 1e-9


@settings(max_examples=50)
@given(
    st.lists(st.one_of(st.none(), st.floats(0, 10)), min_size=1, max_size=200),
    st.floats(0.1, 5),
)
def test_slo_spans_cover_every_miss_and_nothing_else(
    values: list[float | None], limit: float
) -> None:
    ts = list(range(len(values)))
    spans = slo_spans(ts, values, limit, gap=3)
    for t, v in zip(ts, values, strict=True):
        inside = any(a <= t < b for a, b, _ in spans)
        if v is not None and v > limit:
            assert inside
    for a, b, worst in spans:
        assert a < b and worst > 0
        assert values[int(a)] is not None and values[int(a)] > limit  # starts on a miss
        assert values[int(b) - 1] is not None and values[int(b) - 1] > limit  # ends on one
    assert all(spans[i][1] < spans[i + 1][0] for i in range(len(spans) - 1))


def test_connected_users_per_pod_add_up_to_the_locust_users(lab: Trace) -> None:
    pods = lab.pods
    assert pods is not None and pods["t"]
    users_at = dict(zip(lab.column("t"), lab.column("users"), strict=True))
    per_t: dict[int, int] = {}
    for t, u in zip(pods["t"], pods["users"], strict=True):
        per_t[t] = per_t.get(t, 0) + u
    # Every user keeps one connection, except those between a reset and their next request.
    checked = [t for t in per_t if users_at[t]]
    assert checked
    assert all(per_t[t] <= users_at[t] for t in checked)
    assert sum(per_t[t] for t in checked) >= 0.9 * sum(users_at[t] or 0 for t in checked)


def test_the_story_reads_like_kubectl_get_events(lab: Trace) -> None:
    rows = story(lab.events)
    assert [r.t for r in rows] == sorted(r.t for r in rows)
    rescales = [r for r in rows if r.reason == "SuccessfulRescale"]
    scale_events = [
        e for e in lab.events if e["kind"] == "scale" and e.get("target") == "deployment"
    ]
    assert len(rescales) == len(scale_events) > 0
    assert rescales[0].message.startswith(f"New size: {scale_events[0]['new']}; reason: ")
    failed = [r for r in rows if r.reason == "FailedScheduling"]
    assert failed and all(r.type == "Warning" and r.object.startswith("pod/") for r in failed)
    assert all(r.kind == "autoscaler" for r in filter_kind(rows, "autoscaler"))
    assert any(r.reason == "NotTriggerScaleUp" for r in rows)


def test_report_is_one_offline_page_with_every_part(lab: Trace) -> None:
    page = render(lab, "lab")
    assert page.count('<script type="text/javascript">/**') <= 1
    assert "https://cdn" not in page.split("</head>")[1]  # plotly.js inline, no CDN
    plots = re.findall(r'<div id="([\w-]+)" class="plotly-graph-div"', page)
    assert len(plots) == 2  # timelines and per pod
    assert page.count("<tr data-kind=") == len(story(lab.events))
    for heading in ("Why it went wrong", "Summary", "Settings", "Per pod", "Events"):
        assert f"<h2>{heading}</h2>" in page
    assert "maxReplicas 4" in page and "n1-standard-4" in page
    assert '"name":"Locust users"' in page  # closed loop: a users axis
    assert "connected Locust users" in page


def test_open_loop_report_has_no_users_axis() -> None:
    trace = simulate(load_scenario(ROOT / "scenarios" / "spike.yaml", ["duration=2m"]))
    page = render(trace, "spike")
    assert '"name":"Locust users"' not in page and "connected Locust users" not in page
    assert "requests in flight" in page


@pytest.mark.parametrize(("duration", "unit"), [(300, "s"), (1800, "min"), (86400, "h")])
def test_time_axis_unit_follows_the_run_length(duration: float, unit: str) -> None:
    assert time_unit(duration)[0] == unit


@given(st.lists(st.one_of(st.none(), st.integers(0, 100)), max_size=50), st.integers(1, 10))
def test_moving_average_stays_within_the_window(values: list[int | None], window: int) -> None:
    out = moving_average(values, window)
    for i, v in enumerate(out):
        seen = [x for x in values[max(0, i - window + 1) : i + 1] if x is not None]
        if not seen:
            assert v is None
        else:
            assert v is not None and min(seen) - 1e-9 <= v <= max(seen) + 1e-9


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_events_command(lab: Trace, tmp_path: Path) -> None:
    lab.write(tmp_path)
    done = _cli("events", str(tmp_path), "--kind", "hpa")
    assert done.returncode == 0, done.stderr
    assert "SuccessfulRescale" in done.stdout and "FailedScheduling" not in done.stdout
    done = _cli("events", str(tmp_path), "-o", "json", "--kind", "pod")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines and {line["kind"] for line in lines} == {"pod"}
    for args, words in (
        (["--kind", "pods"], "--kind 'pods': allowed hpa"),
        (["-o", "yaml"], "--output 'yaml'"),
    ):
        bad = _cli("events", str(tmp_path), *args)
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr
    missing = _cli("events", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "events.jsonl: not found" in missing.stderr
    (tmp_path / "events.jsonl").write_text('{"t": 1}\n')
    broken = _cli("events", str(tmp_path))
    assert broken.returncode == 2 and "events.jsonl:1" in broken.stderr
