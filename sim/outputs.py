"""Output directories scalelab may write: never delete what scalelab did not write.

A directory scalelab writes holds a marker, ``.scalelab``, listing the files it wrote. A
command writes into ``--out`` only when it is new, empty, or marked (a previous scalelab
output); it then replaces the files it wrote before and leaves anything else there alone. A
directory that is neither is refused before anything runs (``--force`` writes into it anyway,
still deleting nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from sim.errors import UserError

MARK = ".scalelab"


def claim(directory: Path, command: str, *, force: bool = False) -> None:
    """Refuse, before anything runs, a ``directory`` that scalelab must not write."""
    if directory.exists() and not directory.is_dir():
        raise UserError(f"--out {directory}: exists and is not a directory; pick another path")
    if not directory.exists():
        parent = _existing_parent(directory)
        if not os.access(parent, os.W_OK):
            raise UserError(f"--out {directory}: {parent} is not writable")
        return
    if not os.access(directory, os.W_OK):
        raise UserError(f"--out {directory}: not writable")
    if force or (directory / MARK).is_file() or not any(directory.iterdir()):
        return
    raise UserError(
        f"--out {directory}: not empty and not a scalelab output (no {MARK} file); "
        f"scalelab {command} writes only into a new or empty directory or over its own earlier "
        "output: pick another --out, or --force to write into it (nothing of yours is deleted)"
    )


def publish(directory: Path, command: str, write: Callable[[Path], None]) -> list[str]:
    """Run ``write`` into a staging directory beside ``directory``, then move what it wrote into
    place: files from the previous output that this one no longer has are removed, anything
    scalelab did not write stays. A failure leaves the earlier output as it was."""
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(staging)
        names = sorted(p.name for p in staging.iterdir())
        for old in set(_written(directory)) - set(names):
            path = directory / old
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        for name in names:
            target = directory / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(staging / name, target)
        (directory / MARK).write_text(json.dumps({"command": command, "files": names}) + "\n")
        return names
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _written(directory: Path) -> list[str]:
    try:
        files = json.loads((directory / MARK).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and "/" not in f and f not in ("", ".", "..")]


def _existing_parent(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")
