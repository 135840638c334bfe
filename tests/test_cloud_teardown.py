"""Teardown: every path out of a run removes what it created, and says so; failures are
injected at the API (the real kubernetes client against a local fake API server)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import cloud.backend
import cloud.workload
from cloud.backend import TeardownIncompleteError, backend_class
from cloud.cli import register
from cloud.errors import Aborted
from cloud.plan import LOAD_BALANCER_PER_HOUR
from cloud.settings import CloudSettings
from cloud.teardown import STOP_SIGNALS, Ledger, Outcome
from sim.cluster.cost import GKE_CLUSTER_FEE_PER_HOUR
from sim.loader import load_scenario
from tests.cloud_fakes import FakeKubeAPI

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"
NS = "scalelab-test"


class Gone(Exception):
    pass


def test_ledger_deletes_newest_first_and_carries_on() -> None:
    done: list[str] = []
    tries = {"flaky": 0}

    def flaky() -> None:
        tries["flaky"] += 1
        if tries["flaky"] < 2:
            raise RuntimeError("503")
        done.append("flaky")

    def broken() -> None:
        raise RuntimeError("permission denied")

    def gone() -> None:
        raise Gone()

    ledger = Ledger(attempts=2, sleep=lambda s: None)
    ledger.record("first", lambda: done.append("first"))
    ledger.record("broken", broken)
    ledger.record("flaky", flaky)
    ledger.record("gone", gone, lambda err: isinstance(err, Gone))
    report = ledger.teardown()
    assert done == ["flaky", "first"]
    assert [(what, outcome) for what, outcome, _ in report.items] == [
        ("gone", Outcome.ALREADY_GONE),
        ("flaky", Outcome.REMOVED),
        ("broken", Outcome.FAILED),
        ("first", Outcome.REMOVED),
    ]
    assert report.failed == ["broken"] and "permission denied" in report.render()
    assert [e.description for e in ledger.entries] == ["broken"]


def test_keep_removes_nothing_and_the_journal_records(tmp_path: Path) -> None:
    journal = tmp_path / "ledger.jsonl"
    ledger = Ledger(journal)
    ledger.record("thing", lambda: None)
    report = ledger.keep()
    assert report.items == [("thing", Outcome.KEPT, "")] and report.ok
    ledger.teardown()
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["created", "removed"]


@pytest.fixture
def fake_api() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI()
    yield api
    api.close()


def settings_for(api: FakeKubeAPI, tmp_path: Path, **extra: object) -> CloudSettings:
    return CloudSettings(
        delete_poll_s=0.01,
        kubeconfig=str(api.kubeconfig(tmp_path / "kubeconfig")),
        namespace=NS,
        model_path="gs://bucket/model",
        endpoint="http://127.0.0.1:9",  # nothing listens: the model never becomes AVAILABLE
        model_ready_timeout=0.2,
        teardown_attempts=2,
        teardown_backoff_s=0.01,
        **extra,  # type: ignore[arg-type]
    )


def labelled(api: FakeKubeAPI) -> list[str]:
    return [
        path
        for path, item in api.store.items()
        if (item.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/managed-by")
    ]


def run_kube(
    api: FakeKubeAPI,
    tmp_path: Path,
    *,
    keep: bool = False,
    max_cost: float | None = None,
    **extra: object,
) -> list[str]:
    said: list[str] = []
    backend = backend_class("kube")(
        load_scenario(LAB),
        settings_for(api, tmp_path, **extra),
        run_id="t-1",
        out=tmp_path / "run",
        say=said.append,
    )
    backend.run(keep=keep, max_cost=max_cost)
    return said


def test_an_error_while_creating_tears_down_what_was_made(
    fake_api: FakeKubeAPI, tmp_path: Path
) -> None:
    fake_api.fail("POST", r"/deployments$", status=500)
    with pytest.raises(Aborted, match=r"creating Deployment image-classifier .* failed: HTTP 500"):
        run_kube(fake_api, tmp_path)
    assert labelled(fake_api) == []
    deleted = [path for method, path in fake_api.requests if method == "DELETE"]
    assert deleted == [
        f"/api/v1/namespaces/{NS}/configmaps/tfserving-configs",
        f"/api/v1/namespaces/{NS}",
    ]


def test_model_never_available_tears_down(fake_api: FakeKubeAPI, tmp_path: Path) -> None:
    with pytest.raises(Aborted, match=r"not AVAILABLE .* it tore down what it created"):
        run_kube(fake_api, tmp_path)
    assert labelled(fake_api) == []
    journal = (tmp_path / "run" / "cloud-ledger.jsonl").read_text()
    assert journal.count('"created"') == 5 and journal.count('"removed"') == 5


def test_ctrl_c_tears_down_and_says_what_was_removed(
    fake_api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cloud.workload, "wait_model_available", interrupt)
    said: list[str] = []
    backend = backend_class("kube")(
        load_scenario(LAB),
        settings_for(fake_api, tmp_path),
        run_id="t",
        out=tmp_path,
        say=said.append,
    )
    with pytest.raises(Aborted, match=r"run stopped \(interrupted\)"):
        backend.run()
    assert labelled(fake_api) == []
    report = "\n".join(said)
    assert "removed: Deployment image-classifier in namespace scalelab-test" in report
    assert "removed: Namespace scalelab-test" in report


def test_failed_deletes_are_reported_and_cleanup_finds_them(
    fake_api: FakeKubeAPI, tmp_path: Path
) -> None:
    # A namespace's delete takes its contents with it: the namespace is what must fail.
    fake_api.fail("DELETE", rf"/namespaces/{NS}$", status=500, times=2)
    with pytest.raises(Aborted, match=f"could not remove Namespace {NS}"):
        run_kube(fake_api, tmp_path)
    left = labelled(fake_api)
    assert left == [f"/api/v1/namespaces/{NS}"]
    app = typer.Typer()
    register(app)
    kubeconfig = str(tmp_path / "kubeconfig")
    runner = CliRunner()
    listed = runner.invoke(app, ["cloud", "cleanup", "--kubeconfig", kubeconfig, "--dry-run"])
    assert listed.exit_code == 0 and f"Namespace {NS}" in listed.output
    assert labelled(fake_api) == left
    done = runner.invoke(app, ["cloud", "cleanup", "--kubeconfig", kubeconfig, "--yes"])
    assert done.exit_code == 0, done.output
    assert labelled(fake_api) == []


def test_keep_leaves_everything_and_cleanup_removes_it(
    fake_api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(Aborted, match="kept everything"):
        run_kube(fake_api, tmp_path, keep=True)
    assert len(labelled(fake_api)) == 5
    app = typer.Typer()
    register(app)
    done = CliRunner().invoke(
        app,
        [
            "cloud",
            "cleanup",
            "--kubeconfig",
            str(tmp_path / "kubeconfig"),
            "--run-id",
            "t-1",
            "--yes",
        ],
    )
    assert done.exit_code == 0, done.output
    assert labelled(fake_api) == []
    assert "removed: Namespace scalelab-test" in done.output


def test_an_existing_object_is_not_overwritten(fake_api: FakeKubeAPI, tmp_path: Path) -> None:
    fake_api.put(f"/api/v1/namespaces/{NS}", {"kind": "Namespace", "metadata": {"name": NS}})
    fake_api.put(
        f"/api/v1/namespaces/{NS}/configmaps/tfserving-configs",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tfserving-configs"}},
    )
    with pytest.raises(Aborted, match=r"already exists .*scalelab cloud cleanup"):
        run_kube(fake_api, tmp_path)
    assert fake_api.get(f"/api/v1/namespaces/{NS}/configmaps/tfserving-configs") is not None
    assert labelled(fake_api) == []


def test_teardown_incomplete_after_a_good_run_is_an_error() -> None:
    assert issubclass(TeardownIncompleteError, cloud.backend.CloudError)


def test_a_cluster_too_old_for_the_scenario_is_refused_before_creating(
    fake_api: FakeKubeAPI, tmp_path: Path
) -> None:
    fake_api.version = ("1", "32")
    scenario = load_scenario(LAB, ["hpa.behavior={scaleUp: {tolerance: '0.05'}}"])
    backend = backend_class("kube")(
        scenario, settings_for(fake_api, tmp_path), run_id="t", out=tmp_path, say=lambda s: None
    )
    with pytest.raises(Aborted, match=r"runs Kubernetes 1\.32; .*needs 1\.35 or newer"):
        backend.run()
    assert not [m for m, _ in fake_api.requests if m == "POST"]


def test_sighup_tears_down_and_signals_during_teardown_do_not_stop_it(
    fake_api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed terminal (SIGHUP) ends the run like Ctrl-C; from then on writing to it fails,
    and a SIGTERM or SIGHUP in the middle of the teardown neither kills it nor stops it."""
    hung_up: list[bool] = []

    def hang_up(*args: object, **kwargs: object) -> None:
        hung_up.append(True)
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)  # the handler interrupts this

    def say(text: str) -> None:
        if text.startswith("deleting Deployment"):
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGHUP)
        if hung_up:
            raise OSError(5, "Input/output error")

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, *STOP_SIGNALS)}
    monkeypatch.setattr(cloud.workload, "wait_model_available", hang_up)
    backend = backend_class("kube")(
        load_scenario(LAB), settings_for(fake_api, tmp_path), run_id="t", out=tmp_path, say=say
    )
    with pytest.raises(Aborted, match=r"run stopped \(interrupted\)"):
        backend.run()
    assert labelled(fake_api) == []
    journal = (tmp_path / "cloud-ledger.jsonl").read_text()
    assert journal.count('"removed"') == 5
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_max_cost_counts_from_creation_with_the_load_balancer(
    fake_api: FakeKubeAPI, tmp_path: Path
) -> None:
    backend = backend_class("gke")(
        load_scenario(LAB), CloudSettings(), run_id="t", out=tmp_path, journal=False
    )
    assert backend.cost_so_far(time.time()) == 0.0  # nothing created, nothing billed
    backend.ledger.record("GKE cluster c", lambda: None)
    backend.ledger.entries[0].created_at -= 3600
    now = backend.ledger.entries[0].created_at + 3600
    one_hour = 0.189999 + GKE_CLUSTER_FEE_PER_HOUR  # one n1-standard-4 and the cluster fee
    assert backend.cost_so_far(now) == pytest.approx(one_hour)
    backend.load_balancer_since = now - 1800
    assert backend.cost_so_far(now) == pytest.approx(one_hour + LOAD_BALANCER_PER_HOUR / 2)
    # A real run stops before the load when set-up alone reaches the limit.
    with pytest.raises(Aborted, match=r"--max-cost \$0.00 reached .* before the load started"):
        run_kube(fake_api, tmp_path, max_cost=1e-9)
    assert labelled(fake_api) == []


def test_a_namespace_still_terminating_is_waited_for_not_reused(
    fake_api: FakeKubeAPI, tmp_path: Path
) -> None:
    """The previous run's namespace is going: creating in it would be a 403, so the run waits
    for it to go and creates its own (which its teardown then removes, and waits for)."""
    path = f"/api/v1/namespaces/{NS}"
    fake_api.put(path, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    fake_api.finalize_reads = 3
    assert fake_api._delete(path)[0] == 200 and fake_api.terminating(path)
    said: list[str] = []
    backend = backend_class("kube")(
        load_scenario(LAB),
        settings_for(fake_api, tmp_path),
        run_id="t",
        out=tmp_path,
        say=said.append,
    )
    with pytest.raises(Aborted, match="not AVAILABLE"):  # nothing serves: stops after creating
        backend.run()
    assert any("still Terminating" in line for line in said)
    assert f"created Namespace {NS}" in said
    assert ("POST", f"/api/v1/namespaces/{NS}/configmaps") in fake_api.requests
    assert "removed: Namespace scalelab-test" in "\n".join(said)
    assert fake_api.get(path) is None  # gone, not Terminating, when the run returns
