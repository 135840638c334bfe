"""scalelab's real-cluster commands: ``manifests``, ``serve``, ``compare``, ``cloud cleanup``,
and :func:`run_on_cluster` behind ``scalelab run --backend gke|kube``.

Nothing heavy is imported at module level: each command imports what it needs, so
``scalelab --help`` never loads kubernetes, google-cloud-container or locust.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloud.errors import CloudError
from cloud.settings import CloudSettings, new_run_id, with_model_path
from sim.console import fail

if TYPE_CHECKING:
    from sim.scenario import Scenario
    from sim.trace import Trace

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a scenario field: dotted.path=value (repeatable)"),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="show tracebacks")]


CLEANUP_MIN_AGE_H = 25.0
"""Runs younger than this are taken to be in progress by ``cloud cleanup`` (assumed: longer
than the set-up, load and teardown of any scenario in scenarios/: diurnal.yaml runs 24 h)."""


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _prompt(question: str) -> bool:
    return bool(typer.confirm(question, default=False, err=True))


def run_on_cluster(
    scenario: Scenario,
    *,
    backend: str,
    out: Path,
    seed: int | None = None,
    dry_run: bool = False,
    yes: bool = False,
    keep: bool = False,
    max_cost: float | None = None,
    no_lb: bool = False,
    settings: CloudSettings | None = None,
    say: Callable[[str], None] = _say,
    confirm: Callable[[str], bool] | None = None,
) -> Trace | None:
    """``scalelab run SCENARIO --backend gke|kube``.

    Prints the plan (what will be created, the estimated cost); ``dry_run`` stops there and
    needs no credentials. Otherwise asks for confirmation unless ``yes``, runs, writes
    trace.csv, events.jsonl, summary.json and report.html (plus plan.txt, locust.log and
    cloud-ledger.jsonl) into ``out``, and tears down unless ``keep``. Returns the Trace, or None
    for a dry run. Raises :class:`cloud.errors.CloudError` (user-facing message) when the
    scenario cannot run there, the user declines, or the run stops early (Ctrl-C, an error,
    ``max_cost``), after teardown.
    """
    from cloud.backend import backend_class

    settings = with_model_path(settings or CloudSettings.from_env(), scenario)
    cls = backend_class(backend)
    cls.check(scenario)
    run = cls(
        scenario,
        settings,
        run_id=new_run_id(scenario.name),
        out=out,
        say=say,
        seed=seed,
        journal=not dry_run,
    )
    plan = run.plan(no_lb=no_lb, max_cost=max_cost)
    say(plan.render())
    if dry_run:
        return None
    if not settings.model_path:
        raise CloudError(
            "no model path: set SCALELAB_MODEL_PATH to the model's base path "
            "(the lab's gs://BUCKET/resnet_101)"
        )
    run.preflight()
    if not yes:
        if confirm is None and not sys.stdin.isatty():
            raise CloudError("this creates billable resources: add --yes to run without a prompt")
        if not (confirm or _prompt)("create these and run?"):
            raise CloudError("not confirmed; nothing was created")
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.txt").write_text(plan.render() + "\n")
    return run.run(no_lb=no_lb, keep=keep, max_cost=max_cost)


# --- commands -------------------------------------------------------------------------------


def manifests(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    set_: SetOption = None,
    namespace: Annotated[str | None, typer.Option(help="[default: scalelab]")] = None,
    model_path: Annotated[
        str | None, typer.Option(help="TF Serving --model_base_path, e.g. gs://BUCKET/resnet_101")
    ] = None,
    run_id: Annotated[str, typer.Option(help="value of the scalelab.dev/run-id label")] = "manual",
    no_lb: Annotated[bool, typer.Option("--no-lb", help="ClusterIP Service")] = False,
    check: Annotated[
        bool, typer.Option("--validate", help="also check against the OpenAPI schemas")
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Print the run's Kubernetes objects as YAML (for kubectl apply -f -)."""
    from sim.errors import ScenarioError
    from sim.loader import load_scenario

    try:
        loaded = load_scenario(scenario, set_ or [])
        from cloud.manifests import allowed_versions, build_objects, to_yaml, validate

        settings = with_model_path(
            CloudSettings.from_env(namespace=namespace, model_path=model_path), loaded
        )
        objects = build_objects(loaded, settings, run_id=run_id, no_lb=no_lb)
        if not settings.model_path:
            from cloud.manifests import DEFAULT_MODEL_PATH

            _say(
                f"warning: the model path is a placeholder ({DEFAULT_MODEL_PATH}): set "
                "--model-path or SCALELAB_MODEL_PATH before applying these"
            )
        if check:
            versions = allowed_versions(loaded, settings.kubernetes_version)
            problems = validate(objects, versions)
            if problems:
                raise CloudError("the manifests do not validate:\n  " + "\n  ".join(problems))
            _say(f"valid for Kubernetes {', '.join(versions)}")
    except (ScenarioError, CloudError, ValueError) as error:
        fail(error, debug)
        return
    sys.stdout.write(to_yaml(objects))


def serve(
    model_path: Annotated[
        Path | None, typer.Option(help="SavedModel base path (real inference, needs TensorFlow)")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="latency profile family, e.g. resnet101-tfserving")
    ] = None,
    machine_type: Annotated[str, typer.Option(help="machine the profile is for")] = "e2-standard-4",
    model_name: Annotated[str, typer.Option(help="model name in the URLs")] = "image_classifier",
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TF Serving's REST port")] = 8501,
    seed: Annotated[int, typer.Option(help="seed of the service-time draws")] = 1,
    workers: Annotated[
        int | None,
        typer.Option(
            help="requests served at once [default: the knee of X(c, n) for --profile, "
            "4 x threads - 1 for --model-path, TF Serving's --rest_api_num_threads less the "
            "thread its HTTP event loop holds]"
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="TensorFlow intra-op and inter-op threads, as TF Serving's "
            "--tensorflow_intra_op_parallelism/--tensorflow_inter_op_parallelism "
            "(--model-path only) [default: all schedulable cores]",
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """A local server that speaks TF Serving's REST API, to test the real path."""
    from cloud.serve import SavedModelServable, Servable, profile_servable, start_server

    if (model_path is None) == (profile is None):
        fail(CloudError("give exactly one of --model-path or --profile"), debug)
        return
    if threads is not None and model_path is None:
        fail(CloudError("--threads sizes TensorFlow's pools: it needs --model-path"), debug)
        return
    try:
        servable: Servable
        if profile is not None:
            servable = profile_servable(
                profile, machine_type, name=model_name, seed=seed, workers=workers
            )
        else:
            assert model_path is not None
            servable = SavedModelServable(
                model_path, name=model_name, workers=workers, threads=threads
            )
        running = start_server(servable, host, port)
    except (CloudError, ValueError, OSError) as error:
        fail(error, debug)
        return
    _say(f"serving {model_name} at {running.url} (Ctrl-C stops)")
    try:
        running.thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        running.close()


def cleanup(
    backend: Annotated[str, typer.Option(help="gke: labelled clusters; kube: labelled objects")] = (
        "kube"
    ),
    project: Annotated[str | None, typer.Option(help="GCP project (gke)")] = None,
    location: Annotated[
        str | None, typer.Option(help="zone/region (gke) [default: '-', every location]")
    ] = None,
    kubeconfig: Annotated[str | None, typer.Option(help="kubeconfig file (kube)")] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context (kube)")] = None,
    run_id: Annotated[
        str | None, typer.Option(help="only this run's resources, however recent")
    ] = None,
    older_than: Annotated[
        float,
        typer.Option(
            min=0,
            help="hours: runs that started more recently may still be in progress and are "
            "left alone (0: every run)",
        ),
    ] = CLEANUP_MIN_AGE_H,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="delete without asking")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list")] = False,
    debug: DebugOption = False,
) -> None:
    """Find what scalelab left running (by its labels) and remove it."""
    from cloud.gke import run_age_s
    from cloud.teardown import Ledger

    settings = CloudSettings.from_env(
        project=project, location=location or "-", kubeconfig=kubeconfig, context=context
    )
    spared: set[str] = set()

    def spare(run: str) -> bool:
        if run_id is not None:
            return run != run_id
        age = run_age_s(run)
        if age is not None and age < older_than * 3600:
            spared.add(run)
            return True
        return False

    try:
        found = _leftovers(backend, settings, spare)
        if backend == "gke":
            where = "every location" if settings.location == "-" else settings.location
            _say(f"looked in {where} of project {settings.project or '(ADC default)'}")
        for run in sorted(spared):
            _say(
                f"left alone: run {run}, younger than {older_than:g} h (in progress?); "
                "--run-id or --older-than selects it"
            )
    except CloudError as error:
        fail(error, debug)
        return
    if not found:
        _say("nothing of scalelab's found")
        return
    _say("found:\n" + "\n".join(f"  {what}" for what, _ in found))
    if dry_run:
        return
    if not yes and not (sys.stdin.isatty() and _prompt("delete all of these?")):
        fail(CloudError("not confirmed (add --yes); nothing was deleted"), debug)
        return
    ledger = Ledger()
    for what, delete in reversed(found):  # teardown runs newest first: keep the listed order
        ledger.record(what, delete, _gone)
    report = ledger.teardown(_say)
    _say(report.render())
    if not report.ok:
        raise typer.Exit(1)


def _gone(err: BaseException) -> bool:
    status = getattr(err, "status", None) or getattr(err, "code", None)
    return status == 404


def _leftovers(
    backend: str, settings: CloudSettings, spare: Callable[[str], bool]
) -> list[tuple[str, Callable[[], object]]]:
    if backend == "kube":
        from cloud.credentials import kubeconfig_api_client
        from cloud.workload import Kube, leftovers

        return leftovers(
            Kube(kubeconfig_api_client(settings.kubeconfig, settings.context)),
            keep=spare,
            delete_timeout=settings.delete_timeout,
            poll_s=settings.delete_poll_s,
        )
    if backend == "gke":
        from cloud.credentials import gke_api_client, google_credentials
        from cloud.gke import GKE, cluster_leftovers, container_v1
        from cloud.workload import Kube, load_balancer_services

        credentials, project = google_credentials(settings.project)
        client = container_v1().ClusterManagerClient(credentials=credentials)
        gke = GKE(client, project, settings.location, say=_say)

        def remove_load_balancers(cluster: object) -> None:
            # GKE does not promise to delete a cluster's load balancers with it.
            kube = Kube(gke_api_client(cluster, credentials))
            for what, delete in load_balancer_services(kube):
                _say(f"deleting {what} (and waiting for its load balancer to go)")
                delete()

        return cluster_leftovers(
            gke, settings.operation_timeout, before_delete=remove_load_balancers, spare=spare
        )
    raise CloudError(f"unknown backend {backend!r}; cleanup knows gke and kube")


def register(app: typer.Typer) -> None:
    """The ``scalelab.plugins`` entry point: ``manifests``, ``serve``, ``fidelity``,
    ``cloud cleanup``, and
    the gke and kube backends of ``scalelab run``."""
    from cloud.fidelity import register as register_fidelity
    from sim.plugins import register_backend

    register_backend("gke", run_on_cluster)
    register_backend("kube", run_on_cluster)
    app.command("manifests")(manifests)
    app.command("serve")(serve)
    register_fidelity(app)
    group = typer.Typer(help="Real-cluster housekeeping.", no_args_is_help=True)
    group.command("cleanup")(cleanup)
    app.add_typer(group, name="cloud")
