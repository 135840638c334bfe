"""The one way every scalelab command reports a user error: a message on stderr, exit code 2,
and no traceback unless ``--debug``."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


def fail(error: BaseException, debug: bool) -> NoReturn:
    if debug:
        raise error
    err.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)
