"""``scalelab backtest`` and ``scalelab export``: registered on the main app by :func:`register`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from sim.console import fail
from sim.errors import ScenarioError, UserError

DebugOption = Annotated[bool, typer.Option("--debug", help="show tracebacks")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a scenario field: dotted.path=value (repeatable)"),
]

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


def _hpa_manifest(path: Path):  # type: ignore[no-untyped-def]
    import yaml
    from pydantic import ValidationError

    from sim.hpa.spec import HorizontalPodAutoscalerSpec

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"--manifest {path}: cannot read it as YAML ({error})") from None
    if not isinstance(doc, dict):
        raise UserError(f"--manifest {path}: expected a HorizontalPodAutoscaler, got {doc!r:.60}")
    if doc.get("kind") not in (None, "HorizontalPodAutoscaler"):
        raise UserError(
            f"--manifest {path}: kind {doc.get('kind')!r}, expected HorizontalPodAutoscaler"
        )
    spec = doc.get("spec", doc)
    try:
        return HorizontalPodAutoscalerSpec.model_validate(spec)
    except ValidationError as error:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise UserError(f"--manifest {path}: {problems}") from None


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
        timeout: Annotated[float, typer.Option(help="seconds per Prometheus query")] = 30.0,
        force: Annotated[
            bool, typer.Option(help="write into a non-empty --out that is not a scalelab output")
        ] = False,
        debug: DebugOption = False,
    ) -> None:
        """Replay a recorded HPA's syncs through the exact decision core and report how often
        it decides as the real one did (and why not, where it does not)."""
        try:
            _backtest(**locals())
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


def _backtest(**o) -> None:  # type: ignore[no-untyped-def]
    from sim.backtest import openmetrics as om
    from sim.backtest import outputs, recording
    from sim.backtest.load import counter_rate, write_replay
    from sim.backtest.replay import ReplayConfig, replay
    from sim.hpa import ControllerConfig
    from sim.outputs import claim, publish

    if (o["prometheus"] is None) == (o["openmetrics"] is None):
        raise UserError("give exactly one of --prometheus URL and --openmetrics FILE")
    if o["write_load"] is not None and o["requests"] is None:
        raise UserError("--write-load needs --requests (the request-rate query or counter)")
    start = parse_time(o["start"], "--start") if o["start"] is not None else None
    end = parse_time(o["end"], "--end") if o["end"] is not None else None
    if o["prometheus"] is not None and (start is None or end is None):
        raise UserError("--prometheus needs --start and --end")
    controller = ControllerConfig()
    resolution = 15.0
    base = None
    cpu_target = None
    if o["scenario"] is not None:
        from sim.engine import _cpu_target, controller_config
        from sim.loader import load_scenario

        scenario = load_scenario(o["scenario"], o["set_"] or [])
        controller = controller_config(scenario)
        resolution = scenario.metrics.resolution
        if scenario.hpa is not None:
            base = scenario.hpa
            cpu_target = _cpu_target(scenario.hpa)
    if o["manifest"] is not None:
        base = _hpa_manifest(o["manifest"])
    if o["sync_period"] is not None:
        if o["sync_period"] <= 0:
            raise UserError(f"--sync-period must be > 0, got {o['sync_period']}")
        controller = ControllerConfig(**{**controller.__dict__, "sync_period": o["sync_period"]})
    if o["resolution"] is not None:
        if o["resolution"] <= 0:
            raise UserError(f"--resolution must be > 0, got {o['resolution']}")
        resolution = o["resolution"]
    claim(o["out"], "backtest", force=o["force"])

    if o["prometheus"] is not None:
        from sim.backtest import prometheus

        assert start is not None and end is not None
        source = o["prometheus"]
        data = prometheus.fetch(
            source,
            namespace=o["namespace"],
            start=start,
            end=end,
            lookback=2 * resolution,
            timeout=o["timeout"],
        )
    else:
        source = str(o["openmetrics"])
        data = om.read(o["openmetrics"])
    rec = recording.build(
        data, namespace=o["namespace"], hpa=o["hpa"], start=start, end=end, source=source
    )
    rates = None
    if o["requests"] is not None:
        if o["prometheus"] is not None:
            rates = prometheus.request_rate(
                source, o["requests"], start=rec.start, end=rec.end, timeout=o["timeout"]
            )
        else:
            rates = counter_rate(
                data,
                o["requests"],
                namespace=o["namespace"],
                start=rec.start,
                end=rec.end,
                source=source,
            )
    core = base.to_core() if base is not None else None
    if cpu_target is None and base is None:
        cpu_target = next(
            (
                round(t.value)
                for r in rec.rounds[:1]
                for t in r.targets
                if t.metric_name == "cpu" and t.target_type == "utilization"
            ),
            None,
        )
    syncs = replay(rec, core, ReplayConfig(controller=controller, resolution=resolution))
    info = outputs.summary(rec, syncs, source)
    info["sync_period"] = controller.sync_period
    info["resolution"] = resolution
    info["spec_from"] = (
        "manifest" if o["manifest"] else "scenario" if base is not None else "recording"
    )

    def write(staging: Path) -> None:
        outputs.write(staging, rec, syncs, info, cpu_target)

    publish(o["out"], "backtest", write)
    if rates is not None and o["write_load"] is not None:
        write_replay(o["write_load"], rates)
    rate = info["match_rate"]
    shown = "-" if rate is None else f"{100 * rate:.2f}%"
    print(
        f"{info['matched']}/{info['syncs_with_decision']} syncs decided as recorded ({shown}); "
        f"mismatches: {info['mismatches_by_reason'] or 'none'}"
    )
    print(f"wrote {o['out']}/decisions.csv, backtest.json, trace.csv, events.jsonl, summary.json")
