"""Finished runs on disk, keyed by scenario hash and seed, so a sweep resumes where it stopped.

One JSON file per run, written atomically (temp file + rename) by the parent as each result
arrives: an interrupt loses at most the runs in flight, and never leaves a torn file. Each
record carries the fingerprint of the simulator code that made it; a record from other code
is a miss, so a changed engine never serves stale results.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import sim

Record = dict[str, Any]


def _module_file(root: Path, name: str) -> Path | None:
    """``sim.hpa.spec`` -> sim/hpa/spec.py (or its package's __init__.py); None if absent."""
    parts = name.split(".")[1:]
    module = root.joinpath(*parts)
    for path in (module.with_suffix(".py"), module / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path, name: str) -> set[str]:
    """The ``sim`` modules a file imports, anywhere in it (lazy imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "sim" or m.startswith("sim.")}


def engine_files() -> list[Path]:
    """The code ``simulate`` can run and the data it reads.

    The code is ``sim.engine`` and every ``sim`` module it imports, followed through the
    sources (so work elsewhere in ``sim/`` does not invalidate caches); the data is every YAML
    and JSON file in the package, less the sweep's own.
    """
    root = Path(sim.__file__).parent
    seen: dict[str, Path] = {}
    todo = ["sim", "sim.engine"]
    while todo:
        name = todo.pop()
        if name in seen or name.startswith("sim.sweep"):
            continue
        path = _module_file(root, name)
        if path is None:  # ``from sim.x import y`` where y is a name, not a module
            continue
        seen[name] = path
        parent = name.rpartition(".")[0]
        todo += [parent] if parent else []
        todo += sorted(_imports(path, name))
    data = [p for p in root.rglob("*") if p.suffix in (".yaml", ".json") and p.is_file()]
    data = [p for p in data if "sweep" not in p.relative_to(root).parts]
    return sorted({*seen.values(), *data})


@cache
def engine_fingerprint() -> str:
    """Hash of :func:`engine_files` and the version: equal fingerprints, equal runs."""
    root = Path(sim.__file__).parent
    digest = hashlib.sha256(sim.__version__.encode())
    for path in engine_files():
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class RunCache:
    """``<dir>/<scenario sha256>-s<seed>.json``; a missing, torn or stale file is a miss."""

    def __init__(self, directory: Path, fingerprint: str | None = None) -> None:
        self.directory = directory
        self.fingerprint = fingerprint or engine_fingerprint()

    def _path(self, sha: str, seed: int) -> Path:
        return self.directory / f"{sha}-s{seed}.json"

    def get(self, sha: str, seed: int) -> Record | None:
        try:
            entry = json.loads(self._path(sha, seed).read_text())
        except (OSError, ValueError):
            return None
        if (
            not isinstance(entry, dict)
            or entry.get("engine") != self.fingerprint
            or entry.get("sha") != sha
            or entry.get("seed") != seed
        ):
            return None
        record = entry.get("record")
        return record if isinstance(record, dict) else None

    def put(self, sha: str, seed: int, record: Record, engine: str | None = None) -> None:
        """Store a record made by ``engine`` (default: this process's simulator code)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"engine": engine or self.fingerprint, "sha": sha, "seed": seed, "record": record}
        handle, temp = tempfile.mkstemp(prefix=".run.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(entry, out)
            os.replace(temp, self._path(sha, seed))
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*-s*.json")) if self.directory.exists() else 0
