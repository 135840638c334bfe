"""Output directories scalelab may write: never delete what scalelab did not write.

A directory scalelab writes holds a marker, ``.scalelab``, listing the files it wrote. A
command writes into ``--out`` only when it is new, empty, or marked (a previous scalelab
output); it then replaces the files it wrote before and leaves anything else there alone. A
directory that is neither is refused before anything runs (``--force`` writes into it anyway,
still deleting nothing). A command whose output is one file (``calibrate --out``) writes it
only when it is new or one scalelab wrote (``claim_file``), and replaces it atomically.

Directories and files get the ordinary mode (umask): the staging directory is only a
container, and each file is moved out of it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
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


def publish(
    directory: Path, command: str, write: Callable[[Path], None], keep: Sequence[str] = ()
) -> list[str]:
    """Run ``write`` into a staging directory beside ``directory``, then move what it wrote into
    place: files from the previous output that this one no longer has are removed, anything
    scalelab did not write stays. ``keep`` names what the command wrote there directly (a
    sweep's ``cache``), listed in the marker but never removed. A failure leaves the earlier
    output as it was (and no directory this call created)."""
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        try:
            write(staging)
        except BaseException:
            for path in created:  # innermost first; each is empty unless someone wrote there
                if path.is_dir() and not any(path.iterdir()) and path != staging.parent:
                    path.rmdir()
            raise
        directory.mkdir(exist_ok=True)
        names = sorted(p.name for p in staging.iterdir())
        for old in set(_written(directory)) - set(names) - set(keep):
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
        mark(directory, command, [*names, *keep], replace=True)
        return names
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for path in created[1:]:
            if path.is_dir() and not any(path.iterdir()) and not directory.exists():
                path.rmdir()


def mark(directory: Path, command: str, names: Sequence[str], *, replace: bool = False) -> None:
    """Record ``names`` in the marker as files scalelab wrote in ``directory`` (added to those
    already listed that still exist, unless ``replace``)."""
    directory.mkdir(parents=True, exist_ok=True)
    listed = [] if replace else [n for n in _written(directory) if (directory / n).exists()]
    files = sorted(set(listed) | {n for n in names if n != MARK})
    (directory / MARK).write_text(json.dumps({"command": command, "files": files}) + "\n")


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Each entry's (mtime_ns, size): with :func:`changed`, what a run wrote there."""
    if not directory.is_dir():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in directory.iterdir()}


def changed(directory: Path, before: dict[str, tuple[int, int]]) -> list[str]:
    """Entries new or modified since ``before`` (the marker itself aside)."""
    now = snapshot(directory)
    return sorted(n for n, stamp in now.items() if n != MARK and before.get(n) != stamp)


def claim_file(
    path: Path, option: str, command: str, ours: Callable[[Path], bool], *, force: bool = False
) -> None:
    """Refuse, before anything runs, an output file scalelab must not replace: one that exists
    and that ``ours`` does not recognize as scalelab's, unless ``force``."""
    if path.exists() and not path.is_file():
        raise UserError(f"{option} {path}: exists and is not a file; pick another path")
    parent = path.parent if path.parent.exists() else _existing_parent(path)
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{option} {path}: not writable")
    if path.exists() and not force and not ours(path):
        raise UserError(
            f"{option} {path}: exists and was not written by scalelab {command}; pick another "
            f"{option}, or --force to replace it"
        )


def publish_file(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a temporary file beside ``path`` (same suffix, umask mode), then move it into
    place: a failure leaves the earlier file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}{path.suffix}")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


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
