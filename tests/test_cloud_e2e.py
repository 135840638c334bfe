"""The real path end to end on 127.0.0.1: ``run_on_cluster(backend="kube")`` creates the
workload through the real kubernetes client (against a local fake API server), Locust really
posts the lab's request to the local TF Serving stand-in, the observer polls the API, and the
four outputs come out in the simulator's schema. Bounded: seconds of load, three users."""

from __future__ import annotations

import csv
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from kubernetes import client as k8s

from cloud.cli import run_on_cluster
from cloud.errors import Aborted
from cloud.serve import ProfileServable, RunningServer, start_server
from cloud.settings import CloudSettings
from cloud.workload import PortForwarder
from sim.compare import FROM_HISTOGRAM, LatencyHistogram, compare
from sim.engine import simulate
from sim.loader import build_scenario
from sim.locust_csv import FAILURES_COLUMNS
from sim.recorder import bucket_centres
from sim.runinfo import settings as run_settings
from sim.serving.profile import profile_for
from sim.trace import COLUMNS, Trace
from tests.cloud_fakes import FakeKubeAPI, api_json

NS = "scalelab-e2e"
APP = "image-classifier"
GROUP = "https://www.googleapis.com/compute/v1/projects/p/zones/z/instanceGroups/gke-c-default-pool-9f8e7d6c-grp"


class Recording(ProfileServable):
    """The profile stand-in, remembering what each predict carried."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, bytes]] = []

    def predict(self, signature: str, columns: dict[str, list[Any]], rows: int) -> dict[str, Any]:
        self.seen.append((signature, next(iter(columns.values()))[0][:3]))
        return super().predict(signature, columns, rows)


@pytest.fixture
def serving() -> Iterator[tuple[RunningServer, Recording]]:
    servable = Recording(
        profile_for("resnet101-tfserving", "e2-standard-4"), seed=1, time_scale=0.3
    )
    running = start_server(servable, port=0)
    yield running, servable
    running.close()


@pytest.fixture
def fake_api() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI()
    yield api
    api.close()


def now(offset: float = 0.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=offset)


def pod(name: str, *, ready: bool, node: str | None) -> k8s.V1Pod:
    conditions = [
        k8s.V1PodCondition(
            type="Ready", status="True" if ready else "False", last_transition_time=now()
        )
    ]
    if node is None:
        conditions.append(
            k8s.V1PodCondition(
                type="PodScheduled",
                status="False",
                reason="Unschedulable",
                message="0/1 nodes are available: 1 Insufficient cpu.",
            )
        )
    return k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(
            name=name, namespace=NS, labels={"app": APP}, creation_timestamp=now()
        ),
        spec=k8s.V1PodSpec(node_name=node, containers=[k8s.V1Container(name="tf-serving")]),
        status=k8s.V1PodStatus(phase="Running" if node else "Pending", conditions=conditions),
    )


def event(name: str, kind: str, reason: str, message: str) -> k8s.CoreV1Event:
    return k8s.CoreV1Event(
        api_version="v1",
        kind="Event",
        metadata=k8s.V1ObjectMeta(name=f"{name}.{reason}", namespace=NS, uid=f"{name}-{reason}"),
        involved_object=k8s.V1ObjectReference(kind=kind, name=name, namespace=NS),
        reason=reason,
        message=message,
        count=1,
        last_timestamp=now(),
        source=k8s.V1EventSource(component="test"),
    )


def seed_cluster(api: FakeKubeAPI) -> None:
    api.put(
        "/api/v1/nodes/gke-c-default-pool-9f8e7d6c-0001",
        k8s.V1Node(
            api_version="v1",
            kind="Node",
            metadata=k8s.V1ObjectMeta(
                name="gke-c-default-pool-9f8e7d6c-0001",
                creation_timestamp=now(-3600),
                labels={
                    "cloud.google.com/gke-nodepool": "default-pool",
                    "node.kubernetes.io/instance-type": "e2-standard-4",
                },
            ),
            status=k8s.V1NodeStatus(conditions=[k8s.V1NodeCondition(type="Ready", status="True")]),
        ),
    )
    api.put(
        f"/api/v1/namespaces/{NS}/pods/{APP}-a",
        pod(f"{APP}-a", ready=True, node="gke-c-default-pool-9f8e7d6c-0001"),
    )


def the_hpa_scales_up(api: FakeKubeAPI, after: float) -> threading.Thread:
    """What the HPA and the cluster autoscaler would do, ``after`` seconds into the load (the
    first poll of the HPA): a second replica that does not fit."""

    def act() -> None:
        hpa_path = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{APP}"
        deadline = time.monotonic() + 60
        while ("GET", hpa_path) not in api.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(after)
        path = f"/apis/apps/v1/namespaces/{NS}/deployments/{APP}"
        deployment = api.get(path)
        assert deployment is not None
        deployment["spec"]["replicas"] = 2
        hpa = api.get(hpa_path)
        assert hpa is not None
        hpa["status"] = api_json(
            k8s.V2HorizontalPodAutoscalerStatus(
                current_replicas=1,
                desired_replicas=2,
                current_metrics=[
                    k8s.V2MetricStatus(
                        type="Resource",
                        resource=k8s.V2ResourceMetricStatus(
                            name="cpu", current=k8s.V2MetricValueStatus(average_utilization=97)
                        ),
                    )
                ],
            )
        )
        api.put(f"/api/v1/namespaces/{NS}/pods/{APP}-b", pod(f"{APP}-b", ready=False, node=None))
        api.put(
            f"/api/v1/namespaces/{NS}/events/rescale",
            event(
                APP,
                "HorizontalPodAutoscaler",
                "SuccessfulRescale",
                "New size: 2; reason: cpu resource utilization (percentage of request) "
                "above target",
            ),
        )
        api.put(
            f"/api/v1/namespaces/{NS}/events/scaleup",
            event(
                f"{APP}-b",
                "Pod",
                "TriggeredScaleUp",
                f"pod triggered scale-up: [{{{GROUP} 1->2 (max: 3)}}]",
            ),
        )

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def scenario(**load: Any) -> Any:
    return build_scenario(
        {
            "name": "e2e",
            "duration": load.pop("duration", 8),
            "cluster": {
                "node_pool": {"machine_type": "e2-standard-4", "min_nodes": 1, "max_nodes": 3}
            },
            "hpa": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 60},
                        },
                    }
                ],
            },
            "load": load,
        },
        "e2e",
    )


def settings(api: FakeKubeAPI, serving: RunningServer, tmp_path: Path) -> CloudSettings:
    return CloudSettings(
        delete_poll_s=0.01,
        kubeconfig=str(api.kubeconfig(tmp_path / "kubeconfig")),
        namespace=NS,
        endpoint=serving.url,
        model_path="gs://bucket/resnet_101",
        observe_interval=1.0,
        teardown_backoff_s=0.01,
    )


def locust_csv(out: Path, name: str) -> list[list[list[str]]]:
    """The rows of Locust's _stats, _stats_history and _failures files."""
    return [
        list(csv.reader((out / f"{name}_{kind}.csv").open()))
        for kind in ("stats", "stats_history", "failures")
    ]


def managed(api: FakeKubeAPI) -> list[str]:
    return [
        p
        for p, o in api.store.items()
        if (o.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/managed-by")
    ]


def test_locust_against_the_stand_in_makes_a_trace(
    fake_api: FakeKubeAPI, serving: tuple[RunningServer, Recording], tmp_path: Path
) -> None:
    server, servable = serving
    seed_cluster(fake_api)
    lab = scenario(
        kind="locust",
        wait_time={"between": [0.1, 0.2]},
        shape={"kind": "constant", "users": 3, "spawn_rate": 3},
    )
    out = tmp_path / "run"
    said: list[str] = []
    the_hpa_scales_up(fake_api, after=3.0)
    trace = run_on_cluster(
        lab,
        backend="kube",
        out=out,
        yes=True,
        settings=settings(fake_api, server, tmp_path),
        say=said.append,
    )
    assert trace is not None
    # The four outputs, in the simulator's schema.
    assert {"trace.csv", "events.jsonl", "summary.json", "report.html"} <= {
        p.name for p in out.iterdir()
    }
    written = Trace.read(out)
    assert list(written.columns) == list(COLUMNS) and len(written) == 8
    # Locust really sent the lab's request: serving_preprocess with a JPEG.
    assert servable.seen and {s for s, _ in servable.seen} == {"serving_preprocess"}
    assert {head for _, head in servable.seen} == {b"\xff\xd8\xff"}
    completed = [v for v in written.column("completed_rps") if v is not None]
    summary = json.loads((out / "summary.json").read_text())
    assert sum(completed) > 10 and summary["requests_failed"] == 0
    # Requests done after Locust's last sample count in the last second, as in the simulator.
    assert sum(completed) == summary["requests_ok"]
    # The simulator's contract: failures by reason, the settings, the causes.
    assert summary["failures_by_reason"] == {}
    assert summary["settings"] == run_settings(lab)
    assert summary["settings"]["hpa"]["targets"] == ["cpu 60%"]
    assert isinstance(summary["causes"], list)
    # latency_histogram.csv: per second, the OK requests in the simulator's 1% buckets.
    histogram = written.latency_histogram
    assert histogram is not None and list(histogram) == ["t", "latency_s", "count"]
    assert sum(int(c or 0) for c in histogram["count"]) == summary["requests_ok"]
    per_second: dict[int, int] = {}
    for t, n in zip(histogram["t"], histogram["count"], strict=True):
        per_second[int(t or 0)] = per_second.get(int(t or 0), 0) + int(n or 0)
    assert per_second == {
        int(t or 0): int(c)
        for t, c in zip(written.column("t"), written.column("completed_rps"), strict=True)
        if c
    }
    centres = {float(v or 0) for v in histogram["latency_s"]}
    assert centres <= {float(f"{c:.6g}") for c in bucket_centres(range(2000))}
    # The summary's percentiles are the OK requests' (the histogram's), as the simulator's;
    # Locust's own p50 agrees within its rounding (2 significant digits), the 1% buckets and
    # its rank rule (int(n q) + 1 against ceil(n q)); seconds against milliseconds would not.
    merged = LatencyHistogram(histogram).percentiles(0, len(written))
    assert {k: summary[k] for k in merged} == pytest.approx(merged, rel=1e-5)  # CSV: 6 digits
    assert summary["locust_latency"]["p50"] == pytest.approx(summary["latency_p50"], rel=0.1)
    assert all(u == 3 for u in written.column("users")[1:])
    assert summary["backend"] == "kube" and summary["aborted"] is None
    # At least the profile's service time (scaled by 0.3); queueing for the two workers and a
    # busy test machine only add to it.
    alone = 0.3 * profile_for("resnet101-tfserving", "e2-standard-4").alone_latency()
    assert 0.7 * alone < summary["latency_p50"] < 10 * alone
    # The cluster as observed: one replica, then two wanted with one Pending.
    assert (
        written.column("replicas_desired")[0] == 1 and written.column("replicas_desired")[-1] == 2
    )
    assert written.column("replicas_pending")[-1] == 1 and written.column("nodes_ready")[-1] == 1
    assert written.column("cpu_utilization")[-1] == 97 and written.column("cpu_target")[0] == 60
    scale = sorted(written.events_of("scale"), key=lambda e: e["target"])
    assert [(e["target"], e["old"], e["new"]) for e in scale] == [
        ("deployment", 1, 2),
        ("node-pool", 1, 2),
    ]
    assert scale[0]["reason"].startswith("cpu resource utilization")
    assert written.events_of("unschedulable")[0]["pod"] == f"{APP}-b"
    cost = [float(c) for c in written.column("cost_usd") if c is not None]
    assert cost[-1] == pytest.approx(60 * 0.134012 / 3600, rel=1e-3)  # one e2, one-minute minimum
    # Teardown removed everything it created; the seeded cluster objects stay.
    assert managed(fake_api) == []
    assert any("removed: Namespace scalelab-e2e" in line for line in said)
    # And the real trace compares with a simulation of the same scenario.
    fidelity = compare(simulate(lab), written)
    assert fidelity.timelines["replicas_desired"] is not None and fidelity.steps
    # ... with both sides' step percentiles from merged histograms, and no warning about it.
    assert set(fidelity.latency_source.values()) == {FROM_HISTOGRAM}
    assert not [w for w in fidelity.warnings if "latency_histogram" in w]
    # Locust's own CSV files, as the simulator writes them, holding the final totals.
    stats, history, failures = locust_csv(out, "e2e")
    assert stats[0][:4] == ["Type", "Name", "Request Count", "Failure Count"]
    assert stats[0][-1] == "100%" and history[0][:2] == ["Timestamp", "User Count"]
    assert failures == [list(FAILURES_COLUMNS)]
    rows = {r[1]: r for r in stats[1:]}
    assert set(rows) == {"/v1/models/image_classifier/versions/1:predict", "Aggregated"}
    total = summary["requests_ok"] + summary["requests_failed"]
    assert int(rows["Aggregated"][2]) == total and rows["Aggregated"][0] == ""
    # One history row a second (plus Locust's first at start and the final one), cumulative.
    counts = [int(r[history[0].index("Total Request Count")]) for r in history[1:]]
    assert len(history) - 1 >= 8 and counts == sorted(counts) and counts[-1] == total
    stamps = [int(r[0]) for r in history[1:]]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 7


def test_open_loop_stopped_by_the_cost_guard(
    fake_api: FakeKubeAPI, serving: tuple[RunningServer, Recording], tmp_path: Path
) -> None:
    server, _ = serving
    seed_cluster(fake_api)
    lab = scenario(kind="open_loop", duration=60, rate={"kind": "constant", "rps": 4})
    out = tmp_path / "run"
    started = time.monotonic()
    with pytest.raises(Aborted, match=r"--max-cost \$0.00 reached .* tore down"):
        run_on_cluster(
            lab,
            backend="kube",
            out=out,
            yes=True,
            max_cost=0.001,
            settings=settings(fake_api, server, tmp_path),
            say=lambda s: None,
        )
    assert time.monotonic() - started < 30
    summary = json.loads((out / "summary.json").read_text())
    assert "max-cost" in summary["aborted"]
    stats, _, _ = locust_csv(out, "e2e")  # the stopped load's totals are written too
    sent = summary["requests_ok"] + summary["requests_failed"]
    assert int(stats[-1][2]) == sent and stats[-1][1] == "Aggregated"
    assert managed(fake_api) == []
    assert [
        p
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ] == []


def test_port_forwarder_relays_each_connection(serving: tuple[RunningServer, Recording]) -> None:
    server, _ = serving
    host, port = server.server.server_address[:2]
    opened: list[int] = []

    def connect() -> socket.socket:
        opened.append(1)
        return socket.create_connection((str(host), int(port)))

    forwarder = PortForwarder(connect).start()
    try:
        for _ in range(2):
            with urllib.request.urlopen(
                f"{forwarder.url}/v1/models/image_classifier", timeout=5
            ) as r:
                assert json.loads(r.read())["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        forwarder.close()
    assert len(opened) == 2
