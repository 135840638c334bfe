"""``scalelab events RUN``: a run's event story in the terminal, as ``kubectl get events``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sim.console import fail
from sim.errors import UserError
from sim.events import KINDS, StoryRow, clock, filter_kind, story

OUTPUTS = ("table", "wide", "json")


def read_story(run: Path) -> tuple[list[StoryRow], list[dict[str, object]], float]:
    """The story of the run in ``run`` (a directory with events.jsonl), its raw events and
    its duration; a UserError naming the file when it cannot be read."""
    path = run / "events.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: not found; RUN is a directory `scalelab run` wrote")
    raw: list[dict[str, object]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as error:
            raise UserError(f"{path}:{number}: not JSON ({error})") from None
        if not isinstance(event, dict) or "t" not in event or "kind" not in event:
            raise UserError(f"{path}:{number}: an event needs 't' and 'kind', got {line[:80]!r}")
        raw.append(event)
    duration = 0.0
    summary = run / "summary.json"
    if summary.is_file():
        try:
            duration = float(json.loads(summary.read_text()).get("duration_s") or 0.0)
        except (ValueError, TypeError, AttributeError):
            duration = 0.0
    if not duration:
        duration = max((float(e["t"]) for e in raw), default=0.0)  # type: ignore[arg-type]
    return story(raw), raw, duration


def register(app: typer.Typer) -> None:
    @app.command()
    def events(
        run: Annotated[Path, typer.Argument(help="run directory (holds events.jsonl)")],
        kind: Annotated[str | None, typer.Option(help=f"only one kind: {', '.join(KINDS)}")] = None,
        output: Annotated[
            str, typer.Option("--output", "-o", help="table, wide (adds kind) or json")
        ] = "table",
        debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    ) -> None:
        """A run's events as kubectl get events shows them: time, type, reason, object,
        message."""
        if kind is not None and kind not in KINDS:
            fail(UserError(f"--kind {kind!r}: allowed {', '.join(KINDS)}"), debug)
        if output not in OUTPUTS:
            fail(UserError(f"--output {output!r}: allowed {', '.join(OUTPUTS)}"), debug)
        try:
            rows, raw, duration = read_story(run)
        except UserError as error:
            fail(error, debug)
        chosen = filter_kind(rows, kind)
        if output == "json":
            if kind is None:
                for event in raw:
                    print(json.dumps(event))
            else:
                for row in chosen:
                    print(json.dumps(row.as_dict()))
            return
        table = Table(box=None, pad_edge=False, show_edge=False)
        for name in ("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"):
            table.add_column(name, overflow="fold")
        if output == "wide":
            table.add_column("KIND")
        for row in chosen:
            cells = [clock(row.t, duration), row.type, row.reason, row.object, row.message]
            if output == "wide":
                cells.append(row.kind)
            table.add_row(*cells, style="yellow" if row.type == "Warning" else None)
        Console(width=200).print(table)
