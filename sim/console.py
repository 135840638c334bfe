"""The one way every scalelab command reports a user error: a message on stderr, exit code 2,
and no traceback unless ``--debug``; and scalelab's own warnings as one line each."""

from __future__ import annotations

import warnings
from typing import Any, NoReturn, TextIO

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


def fail(error: BaseException, debug: bool) -> NoReturn:
    if debug:
        raise error
    err.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def route_warnings() -> None:
    """Show scalelab's own warnings (a category defined in ``sim`` or ``cloud``, e.g. a
    profile extrapolated beyond what was measured) as one ``warning:`` line on stderr, once
    per message; Python's format (file, line, source) is for developers, and other packages'
    warnings keep it."""
    shown: set[str] = set()
    python_format = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
        **_: Any,
    ) -> None:
        if category.__module__.split(".")[0] not in ("sim", "cloud"):
            python_format(message, category, filename, lineno, file, line)
            return
        text = str(message)
        if text not in shown:
            shown.add(text)
            err.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)

    warnings.showwarning = show
