"""``python -m sim.serving.calibrate calibrate ...``: the command without the scalelab entry
point."""

from __future__ import annotations

import typer

from sim.serving.calibrate.cli import register

app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.callback()
def _root() -> None:
    """scalelab's calibrate command, standalone."""


register(app)

if __name__ == "__main__":
    app()
