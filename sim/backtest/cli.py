"""``scalelab backtest`` and ``scalelab export``: registered on the main app by :func:`register`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sim.console import fail
from sim.errors import ScenarioError, UserError

if TYPE_CHECKING:
    from sim.backtest.recording import Recording
    from sim.backtest.replay import ReplayConfig, Sync
    from sim.hpa.spec import HorizontalPodAutoscalerSpec
    from sim.hpa.types import HPASpec
    from sim.scenario import Scenario
    from sim.trace import Trace

DebugOption = Annotated[bool, typer.Option("--debug", help="show tracebacks")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a scenario field: dotted.path=value (repeatable)"),
]


@dataclass(frozen=True)
class BacktestArgs:
    """``scalelab backtest``'s options as given (checked in :func:`_backtest`)."""

    out: Path
    hpa: str
    namespace: str
    prometheus: str | None
    openmetrics: Path | None
    start: str | None
    end: str | None
    scenario: Path | None
    set_: list[str] | None
    manifest: Path | None
    sync_period: float | None
    resolution: float | None
    requests: str | None
    write_load: Path | None
    propose: Path | None
    model: str
    timeout: float
    force: bool


#: The unix time a run's t = 0 is exported at when --start is not given (fixed, so the same
#: run always gives the same bytes). Prometheus' default retention (15 d) deletes older
#: blocks at start-up: pass --start, or --storage.tsdb.retention.time to prometheus.
DEFAULT_EXPORT_START = "2025-01-01T00:00:00Z"


def parse_time(text: str, option: str) -> float:
    """RFC 3339 or unix seconds, as Prometheus' HTTP API takes them."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"{option} {text!r}: expected RFC 3339 (2025-01-01T00:00:00Z) or unix seconds"
        ) from None
    if parsed.tzinfo is None:
        raise UserError(f"{option} {text!r}: RFC 3339 needs a time zone (Z or +hh:mm)")
    return parsed.timestamp()


def _hpa_manifest(path: Path, option: str = "--manifest") -> HorizontalPodAutoscalerSpec:
    import yaml
    from pydantic import ValidationError

    from sim.hpa.spec import HorizontalPodAutoscalerSpec

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"{option} {path}: cannot read it as YAML ({error})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{option} {path}: expected a HorizontalPodAutoscaler, got {doc!r:.60}")
    if doc.get("kind") not in (None, "HorizontalPodAutoscaler"):
        raise UserError(
            f"{option} {path}: kind {doc.get('kind')!r}, expected HorizontalPodAutoscaler"
        )
    spec = doc.get("spec", doc)
    try:
        return HorizontalPodAutoscalerSpec.model_validate(spec)
    except ValidationError as error:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise UserError(f"{option} {path}: {problems}") from None


def register(app: typer.Typer) -> None:
    @app.command()
    def backtest(
        out: Annotated[Path, typer.Option(help="output directory")],
        hpa: Annotated[str, typer.Option(help="the HorizontalPodAutoscaler's name")],
        namespace: Annotated[str, typer.Option(help="its namespace")] = "default",
        prometheus: Annotated[
            str | None, typer.Option(help="Prometheus URL, e.g. http://127.0.0.1:9090")
        ] = None,
        openmetrics: Annotated[
            Path | None, typer.Option(help="an OpenMetrics file instead (offline)")
        ] = None,
        start: Annotated[
            str | None, typer.Option(help="window start: RFC 3339 or unix s [file: its first]")
        ] = None,
        end: Annotated[
            str | None, typer.Option(help="window end: RFC 3339 or unix s [file: its last]")
        ] = None,
        scenario: Annotated[
            Path | None,
            typer.Option(help="scenario: HPA spec, controller flags, metrics resolution"),
        ] = None,
        set_: SetOption = None,
        manifest: Annotated[
            Path | None, typer.Option(help="the HPA's manifest (spec incl. behavior)")
        ] = None,
        sync_period: Annotated[
            float | None, typer.Option(help="HPA sync period, s [scenario's, else 15]")
        ] = None,
        resolution: Annotated[
            float | None,
            typer.Option(help="metrics-server resolution, s [scenario's, else 15 (upstream)]"),
        ] = None,
        requests: Annotated[
            str | None,
            typer.Option(
                help="request rate: a PromQL query (--prometheus) or a counter's name "
                "(--openmetrics), e.g. ':tensorflow:serving:request_count'"
            ),
        ] = None,
        write_load: Annotated[
            Path | None, typer.Option(help="write the request rate as a replay load file")
        ] = None,
        propose: Annotated[
            Path | None,
            typer.Option(
                help="counterfactual: another HPA spec (an HPA manifest, or a scenario's hpa); "
                "--set hpa.FIELD=VALUE changes it (or the recorded spec) too"
            ),
        ] = None,
        model: Annotated[
            str,
            typer.Option(
                help="counterfactual model: cpu (recorded CPU demand shared among the Ready "
                "pods), simulator (the full simulator on the recorded request rate; needs "
                "--requests and --scenario), auto (simulator when both are given)"
            ),
        ] = "auto",
        timeout: Annotated[float, typer.Option(help="seconds per Prometheus query")] = 30.0,
        force: Annotated[
            bool, typer.Option(help="write into a non-empty --out that is not a scalelab output")
        ] = False,
        debug: DebugOption = False,
    ) -> None:
        """Replay a recorded HPA's syncs through the exact decision core and report how often
        it decides as the real one did (and why not, where it does not); replay the recorded
        demand under the recorded or a proposed spec (--propose, --set hpa.*): replicas,
        pod-hours, cost and utilization against the recorded ones."""
        try:
            _backtest(
                BacktestArgs(
                    out=out,
                    hpa=hpa,
                    namespace=namespace,
                    prometheus=prometheus,
                    openmetrics=openmetrics,
                    start=start,
                    end=end,
                    scenario=scenario,
                    set_=set_,
                    manifest=manifest,
                    sync_period=sync_period,
                    resolution=resolution,
                    requests=requests,
                    write_load=write_load,
                    propose=propose,
                    model=model,
                    timeout=timeout,
                    force=force,
                )
            )
        except (UserError, ScenarioError) as error:
            fail(error, debug)

    @app.command()
    def export(
        run: Annotated[Path, typer.Argument(help="run directory (trace.csv, events.jsonl)")],
        openmetrics: Annotated[Path, typer.Option(help="OpenMetrics file to write")],
        scenario: Annotated[Path, typer.Option(help="the scenario the run ran")],
        set_: SetOption = None,
        namespace: Annotated[str, typer.Option(help="namespace label")] = "default",
        start: Annotated[
            str, typer.Option(help="unix time of the run's t=0: RFC 3339 or unix s")
        ] = DEFAULT_EXPORT_START,
        debug: DebugOption = False,
    ) -> None:
        """Write a run as OpenMetrics under kube-state-metrics' and cAdvisor's names, to load
        into Prometheus (promtool tsdb create-blocks-from openmetrics) or backtest."""
        try:
            _export(run, openmetrics, scenario, set_ or [], namespace, start)
        except (UserError, ScenarioError) as error:
            fail(error, debug)


def _export(
    run: Path,
    target: Path,
    scenario_path: Path,
    overrides: list[str],
    namespace: str,
    start_text: str,
) -> None:
    from sim.backtest import openmetrics as om
    from sim.backtest.export import export
    from sim.loader import load_scenario, scenario_sha256
    from sim.trace import Trace

    start = parse_time(start_text, "--start")
    scenario = load_scenario(scenario_path, overrides)
    try:
        trace = Trace.read(run)
    except (OSError, ValueError) as error:
        raise UserError(f"RUN {run}: not a run directory ({error})") from None
    recorded = trace.summary.get("scenario_sha256")
    if recorded is not None and recorded != scenario_sha256(scenario):
        raise UserError(
            f"--scenario {scenario_path}: not the scenario {run} ran (its summary.json has "
            f"scenario_sha256 {recorded[:12]}..., this one {scenario_sha256(scenario)[:12]}...); "
            "pass the same file and --set overrides"
        )
    if not any(e["kind"] == "pod_metrics" for e in trace.events):
        raise UserError(
            f"RUN {run}: events.jsonl has no pod_metrics events (per-pod CPU); rerun it with "
            "this version of scalelab"
        )
    text = om.render(export(trace, scenario, namespace=namespace, start=start))
    if target.exists() and target.is_dir():
        raise UserError(f"--openmetrics {target}: is a directory")
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_text(text)
        partial.replace(target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise UserError(f"--openmetrics {target}: cannot write it ({error.strerror})") from None
    print(f"wrote {target} ({text.count(chr(10))} lines)")


def _is_hpa_override(text: str) -> bool:
    path = text.split("=", 1)[0].strip()
    return path == "hpa" or path.startswith(("hpa.", "hpa["))


def _proposal_file(path: Path) -> HorizontalPodAutoscalerSpec:
    """An HPA manifest, or a scenario file's ``hpa``."""
    import yaml

    from sim.loader import load_scenario

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"--propose {path}: cannot read it as YAML ({error})") from None
    if isinstance(doc, dict) and doc.get("kind") == "HorizontalPodAutoscaler":
        return _hpa_manifest(path, "--propose")
    if isinstance(doc, dict) and "hpa" in doc:
        spec = load_scenario(path).hpa
        if spec is None:
            raise UserError(f"--propose {path}: its hpa is empty")
        return spec
    raise UserError(
        f"--propose {path}: expected an HPA manifest (kind: HorizontalPodAutoscaler) or a "
        f"scenario with an hpa, got {str(doc)[:60]!r}"
    )


def _with_hpa_overrides(
    spec: HorizontalPodAutoscalerSpec, overrides: list[str]
) -> HorizontalPodAutoscalerSpec:
    from pydantic import ValidationError

    from sim.hpa.spec import HorizontalPodAutoscalerSpec
    from sim.loader import with_overrides

    data = with_overrides(
        {"hpa": spec.model_dump(mode="json", by_alias=True, exclude_none=True)}, "--set", overrides
    )
    try:
        return HorizontalPodAutoscalerSpec.model_validate(data["hpa"])
    except ValidationError as error:
        problems = "; ".join(
            f"hpa.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise UserError(f"--set {' '.join(overrides)}: {problems}") from None


def _recorded_spec(rec: Recording) -> HorizontalPodAutoscalerSpec | None:
    """The HPA spec as kube-state-metrics recorded it at the window's first round."""
    from sim.hpa.spec import HorizontalPodAutoscalerSpec

    first = next((r for r in rec.rounds if r.max_replicas is not None), None)
    if first is None:
        return None
    metrics = [
        {
            "type": "Resource",
            "resource": {
                "name": t.metric_name,
                "target": {"type": "Utilization", "averageUtilization": round(t.value)},
            },
        }
        for t in first.targets
        if t.target_type == "utilization"
    ]
    return HorizontalPodAutoscalerSpec.model_validate(
        {
            "minReplicas": first.min_replicas if first.min_replicas is not None else 1,
            "maxReplicas": first.max_replicas,
            **({"metrics": metrics} if metrics else {}),
        }
    )


def _backtest(o: BacktestArgs) -> None:
    from sim.backtest import openmetrics as om
    from sim.backtest import outputs, recording
    from sim.backtest.load import counter_rate, write_replay
    from sim.backtest.replay import ReplayConfig, replay, spec_at
    from sim.hpa import ControllerConfig
    from sim.outputs import claim, publish

    if (o.prometheus is None) == (o.openmetrics is None):
        raise UserError("give exactly one of --prometheus URL and --openmetrics FILE")
    if o.write_load is not None and o.requests is None:
        raise UserError("--write-load needs --requests (the request-rate query or counter)")
    if o.model not in ("auto", "cpu", "simulator"):
        raise UserError(f"--model {o.model!r}: expected auto, cpu or simulator")
    if o.model == "simulator" and (o.requests is None or o.scenario is None):
        raise UserError(
            "--model simulator needs --requests (the recorded request rate) and --scenario "
            "(the serving profile, pools and pods the simulator runs)"
        )
    simulator = o.model == "simulator" or (
        o.model == "auto" and o.requests is not None and o.scenario is not None
    )
    start = parse_time(o.start, "--start") if o.start is not None else None
    end = parse_time(o.end, "--end") if o.end is not None else None
    if o.prometheus is not None and (start is None or end is None):
        raise UserError("--prometheus needs --start and --end")
    overrides = o.set_ or []
    hpa_overrides = [x for x in overrides if _is_hpa_override(x)]
    controller = ControllerConfig()
    resolution = 15.0
    base = None
    scenario = None
    if o.scenario is not None:
        from sim.engine import controller_config
        from sim.loader import load_scenario

        scenario = load_scenario(o.scenario, [x for x in overrides if x not in hpa_overrides])
        controller = controller_config(scenario)
        resolution = scenario.metrics.resolution
        base = scenario.hpa
    elif overrides != hpa_overrides:
        raise UserError(
            "--set: without --scenario only hpa.FIELD=VALUE overrides (the proposal) apply, got "
            + " ".join(x for x in overrides if x not in hpa_overrides)
        )
    if o.manifest is not None:
        base = _hpa_manifest(o.manifest)
    proposal = _proposal_file(o.propose) if o.propose is not None else None
    if o.sync_period is not None:
        if o.sync_period <= 0:
            raise UserError(f"--sync-period must be > 0, got {o.sync_period}")
        controller = ControllerConfig(**{**controller.__dict__, "sync_period": o.sync_period})
    if o.resolution is not None:
        if o.resolution <= 0:
            raise UserError(f"--resolution must be > 0, got {o.resolution}")
        resolution = o.resolution
    from sim.extras import require  # its packages are an extra: say so before --out is made

    require(
        ["prometheus_api_client" if o.prometheus is not None else "prometheus_client"],
        "scalelab backtest",
    )
    claim(o.out, "backtest", force=o.force)

    if o.prometheus is not None:
        from sim.backtest import prometheus

        assert start is not None and end is not None
        source = o.prometheus
        data = prometheus.fetch(
            source,
            namespace=o.namespace,
            start=start,
            end=end,
            lookback=2 * resolution,
            timeout=o.timeout,
        )
    else:
        assert o.openmetrics is not None  # exactly one of the two, checked above
        source = str(o.openmetrics)
        data = om.read(o.openmetrics)
    rec = recording.build(
        data, namespace=o.namespace, hpa=o.hpa, start=start, end=end, source=source
    )
    rates = None
    if o.requests is not None:
        if o.prometheus is not None:
            rates = prometheus.request_rate(
                source, o.requests, start=rec.start, end=rec.end, timeout=o.timeout
            )
        else:
            rates = counter_rate(
                data,
                o.requests,
                namespace=o.namespace,
                start=rec.start,
                end=rec.end,
                source=source,
            )
    core = base.to_core() if base is not None else None
    config = ReplayConfig(controller=controller, resolution=resolution)
    syncs = replay(rec, core, config)
    info = outputs.summary(rec, syncs, source)
    info["sync_period"] = controller.sync_period
    info["resolution"] = resolution
    info["spec_from"] = (
        "manifest" if o.manifest else "scenario" if base is not None else "recording"
    )

    # The counterfactual: the proposal, or the recorded spec (then a check of the model).
    recorded = base if base is not None else _recorded_spec(rec)
    if hpa_overrides:
        start_from = proposal if proposal is not None else recorded
        if start_from is None:
            raise UserError(
                f"--set {' '.join(hpa_overrides)}: no HPA spec to change (the recording has no "
                "kube_horizontalpodautoscaler_spec_max_replicas; give --manifest or --propose)"
            )
        proposal = _with_hpa_overrides(start_from, hpa_overrides)
    spec_from = (
        " + ".join(
            x
            for x in (
                f"--propose {o.propose}" if o.propose is not None else "",
                f"--set {' '.join(hpa_overrides)}" if hpa_overrides else "",
            )
            if x
        )
        or "the recorded spec (a check of the model)"
    )
    chosen = proposal if proposal is not None else recorded
    if chosen is None or not rec.rounds:
        raise UserError(f"{source}: no HPA spec recorded in the window; give --manifest")
    spec_core = proposal.to_core() if proposal is not None else spec_at(core, rec.rounds[0])
    if spec_core is None:
        spec_core = chosen.to_core()
    cpu_target = _cpu_target_of(spec_at(core, rec.rounds[0]) if proposal is None else spec_core)
    replay_target = _cpu_target_of(spec_at(core, rec.rounds[0]))
    whatif = _counterfactual(rec, syncs, spec_core, config, scenario, cpu_target)
    comparison = whatif["comparison"]
    comparison["spec_from"] = spec_from
    comparison["spec"] = chosen.model_dump(mode="json", by_alias=True, exclude_none=True)
    proposed_trace = whatif["trace"]
    if simulator:
        assert scenario is not None and rates is not None
        proposed_trace, simulated = _simulate(scenario, chosen, rec, rates)
        comparison = {**comparison, **simulated}
        comparison["cpu_model_check"] = whatif["comparison"]["proposed"]

    def write(staging: Path) -> None:
        from sim.backtest.report import render

        replayed = outputs.write(staging, rec, syncs, info, replay_target, whatif["recorded"])
        if proposal is not None or simulator:
            proposed_trace.summary = {**comparison["proposed"], "spec_from": spec_from}
            proposed_trace.write(staging / "proposal")
        (staging / "counterfactual.json").write_text(json.dumps(comparison, indent=2) + "\n")
        title = f"backtest {rec.namespace}/{rec.hpa}"
        shown = proposed_trace if proposal is not None or simulator else None
        (staging / "report.html").write_text(render(title, info, comparison, replayed, shown))

    publish(o.out, "backtest", write)
    if rates is not None and o.write_load is not None:
        write_replay(o.write_load, rates)
    rate = info["match_rate"]
    shown_rate = "-" if rate is None else f"{100 * rate:.2f}%"
    print(
        f"{info['matched']}/{info['syncs_with_decision']} syncs decided as recorded "
        f"({shown_rate}); mismatches: {info['mismatches_by_reason'] or 'none'}"
    )
    r, p = comparison["recorded"], comparison["proposed"]
    print(
        f"counterfactual ({comparison['model']}; {spec_from}): pod-hours {p['pod_hours']} vs "
        f"{r['pod_hours']} recorded, max replicas {p['max_replicas']} vs {r['max_replicas']}, "
        f"cost {_usd(p['cost_usd'])} vs {_usd(r['cost_usd'])}"
    )
    extra = ", proposal/" if proposal is not None or simulator else ""
    print(
        f"wrote {o.out}/decisions.csv, backtest.json, trace.csv, events.jsonl, summary.json, "
        f"counterfactual.json, report.html{extra}"
    )


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _cpu_target_of(spec: HPASpec | None) -> int | None:
    from sim.hpa.types import MetricSourceType, MetricTargetType

    for m in spec.metrics if spec is not None else ():
        if (
            m.type is MetricSourceType.RESOURCE
            and m.name == "cpu"
            and m.target.type is MetricTargetType.UTILIZATION
        ):
            return m.target.average_utilization
    return None


def _counterfactual(
    rec: Recording,
    syncs: list[Sync],
    spec: HPASpec,
    config: ReplayConfig,
    scenario: Scenario | None,
    cpu_target: int | None,
) -> dict[str, Any]:
    from sim.backtest import whatif
    from sim.backtest.counterfactual import counterfactual
    from sim.backtest.pool import node_model

    seconds = int(rec.end - rec.start)
    request = next((p.cpu_request for p in rec.lives.values() if p.cpu_request), 0)
    pool = node_model(scenario, request) if scenario is not None else None
    capacity = pool.capacity if pool is not None else None
    outcome = counterfactual(rec, spec, config, capacity=capacity)
    recorded = whatif.timeline(whatif.recorded_lives(rec), seconds, pool)
    proposed = whatif.timeline(whatif.proposed_lives(outcome), seconds, pool)
    comparison = whatif.compare(rec, syncs, outcome, recorded, proposed, spec={}, spec_from="")
    if pool is None:
        comparison["notes"] = [
            *comparison["notes"],
            "no --scenario: nodes and cost not computed (they come from its node pools)",
        ]
    trace = whatif.proposal_trace(outcome, proposed, cpu_target, seconds)
    return {"comparison": comparison, "trace": trace, "recorded": recorded}


def _simulate(
    scenario: Scenario, spec: HorizontalPodAutoscalerSpec, rec: Recording, rates: list[float]
) -> tuple[Trace, dict[str, Any]]:
    """The full simulator on the recorded request rate under ``spec`` (open-loop replay),
    starting from the recorded replicas; latency predicted."""
    from sim.engine import simulate
    from sim.loader import build_scenario

    seconds = len(rates)
    first = rec.rounds[0].current if rec.rounds else 1
    data = scenario.model_dump(mode="json", by_alias=True)
    data["hpa"] = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["duration"] = float(seconds)
    data["start"] = "warm"
    data["deployment"]["replicas"] = first
    data["load"] = {
        "kind": "open_loop",
        "rate": {
            "kind": "replay",
            "file": "(recorded --requests)",
            "points": [[float(t), float(r)] for t, r in enumerate(rates)],
            "end": float(seconds),
        },
    }
    built = build_scenario(data, "backtest --model simulator")
    trace = simulate(built)
    s = trace.summary
    cols = trace.columns
    running = [
        (c or 0) - (p or 0)
        for c, p in zip(cols["replicas_current"], cols["replicas_pending"], strict=True)
    ]
    current = [int(c or 0) for c in cols["replicas_current"]]
    proposed = {
        "max_replicas": max(current, default=0),
        "max_replicas_desired": s.get("max_replicas_desired"),
        "mean_replicas": round(sum(current) / seconds, 4) if seconds else None,
        "mean_replicas_ready": round(sum(int(r or 0) for r in cols["replicas_ready"]) / seconds, 4)
        if seconds
        else None,
        "pod_hours": round(sum(running) / 3600, 6),
        "max_nodes": s.get("max_nodes_ready"),
        "node_hours": s.get("node_hours"),
        "cost_usd": s.get("cost_usd"),
        "latency_p50": s.get("latency_p50"),
        "latency_p95": s.get("latency_p95"),
        "latency_p99": s.get("latency_p99"),
        "failed_rps_total": s.get("requests_failed"),
        "requests_total": s.get("requests_total"),
    }
    return trace, {
        "model": "simulator",
        "demand_model": "the full simulator (serving profile "
        f"{scenario.serving.profile!r}) on the recorded request rate, open loop",
        "proposed": proposed,
    }
