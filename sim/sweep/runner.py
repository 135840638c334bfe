"""Runs tasks through the cache and an executor, counting what was computed and what reused."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sim.sweep.cache import RunCache, engine_fingerprint
from sim.sweep.executor import Executor, Task
from sim.sweep.worker import Record

OnRecord = Callable[[Task, Record], None]


@dataclass
class Runner:
    """The executor starts on first need, so a fully cached resume starts no workers."""

    make_executor: Callable[[], Executor]
    cache: RunCache | None = None
    reuse: bool = True
    computed: list[tuple[str, int]] = field(default_factory=list)
    reused: list[tuple[str, int]] = field(default_factory=list)
    _executor: Executor | None = None

    def run(
        self, tasks: Sequence[Task], on_record: OnRecord | None = None
    ) -> dict[tuple[str, int], Record]:
        """Every task's record (identical tasks run once); ``on_record`` sees each as it lands."""
        records: dict[tuple[str, int], Record] = {}
        todo: list[Task] = []
        pending: set[tuple[str, int]] = set()
        for task in tasks:
            if task.key in records or task.key in pending:
                continue
            record = None
            if self.cache is not None and self.reuse:
                record = self.cache.get(task.sha, task.seed)
            if record is None:
                todo.append(task)
                pending.add(task.key)
                continue
            records[task.key] = record
            self.reused.append(task.key)
            if on_record is not None:
                on_record(task, record)
        if not todo:
            return records
        if self._executor is None:
            self._executor = self.make_executor()
        here = self.cache.fingerprint if self.cache is not None else engine_fingerprint()
        for task, raw in self._executor.run(todo):
            engine = raw.get("engine")
            if self._executor.remote and engine != here:
                raise RuntimeError(
                    f"a worker ran other simulator code (fingerprint {engine}, here {here}); "
                    "install the same scalelab on every Dask worker"
                )
            # Through JSON, so a fresh record is exactly what a resumed sweep reads back.
            record = json.loads(json.dumps(raw))
            if self.cache is not None:
                # Tagged with the code that produced it: if sim/ changed under a local sweep,
                # a resume with the new code recomputes rather than mixing versions.
                self.cache.put(task.sha, task.seed, record, engine)
            records[task.key] = record
            self.computed.append(task.key)
            if on_record is not None:
                on_record(task, record)
        return records

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None
