"""Where runs execute: in-process, a local process pool, or a Dask cluster.

All three take the same tasks and yield the same records (a run is a pure function of scenario
and seed), in completion order; the caller files them by (scenario hash, seed), so the order
does not show in the results. Dask is imported only when asked for.
"""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sim.scenario import Scenario
from sim.sweep.worker import Record, ignore_sigint, run_one


@dataclass(frozen=True)
class Task:
    """One run: a point's scenario with one seed; (sha, seed) is its identity."""

    sha: str
    seed: int
    scenario: Scenario

    @property
    def key(self) -> tuple[str, int]:
        return self.sha, self.seed


class Executor(ABC):
    """Runs tasks and yields ``(task, record)`` as each finishes."""

    name = "executor"
    remote = False
    """Whether workers may run other code than this process (checked per record)."""

    @abstractmethod
    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Record]]: ...

    def close(self) -> None:  # noqa: B027 - most executors hold nothing to close
        """Stop workers and drop queued tasks; idempotent."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class SerialExecutor(Executor):
    """``-j 1``: runs in this process, one after another (debuggable, no start-up cost)."""

    name = "serial"

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Record]]:
        for task in tasks:
            yield task, run_one(task.scenario, task.seed)


class ProcessExecutor(Executor):
    """A pool of ``jobs`` worker processes from a forkserver that has imported the simulator.

    Each worker imports the simulator once (inherited from the forkserver's preload), not per
    run; forkserver rather than fork, because the parent has threads (progress bar, pool).
    """

    name = "local"

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ValueError(f"-j must be >= 1, got {jobs}")
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["sim.sweep.worker"])
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=context, initializer=ignore_sigint
            )
        return self._pool

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Record]]:
        pool = self._get_pool()
        futures: dict[Future[Record], Task] = {
            pool.submit(run_one, task.scenario, task.seed): task for task in tasks
        }
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor(Executor):
    """Runs on a Dask distributed cluster: ``scheduler`` is its address (tcp://HOST:8786).

    Without an address it starts a LocalCluster of ``jobs`` single-threaded worker processes
    on loopback. Workers need scalelab installed (same version: records carry no code).
    Connecting happens here, so an unreachable scheduler fails before anything runs.
    """

    name = "dask"
    remote = True

    def __init__(self, scheduler: str | None, jobs: int, timeout: float = 10.0) -> None:
        from distributed import Client, LocalCluster

        self._cluster: Any = None
        if scheduler is None:
            self._cluster = LocalCluster(
                n_workers=jobs,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            )
            scheduler = self._cluster.scheduler_address
        self.address = scheduler
        try:
            self._client: Any = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as err:
            if self._cluster is not None:
                self._cluster.close()
            raise ConnectionError(
                f"cannot reach the Dask scheduler at {scheduler}: {err}"
            ) from None

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Record]]:
        from distributed import as_completed as dask_completed

        futures = {
            self._client.submit(run_one, task.scenario, task.seed, pure=False): task
            for task in tasks
        }
        try:
            for future, record in dask_completed(futures, with_results=True):
                yield futures[future], record
        finally:
            self._client.cancel(list(futures))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def make_executor(kind: str, jobs: int, scheduler: str | None = None) -> Executor:
    """``local`` (``-j 1`` runs serially in this process) or ``dask``."""
    if kind == "dask":
        return DaskExecutor(scheduler, jobs)
    if kind != "local":
        raise ValueError(f"unknown executor {kind!r}; allowed: local, dask")
    if scheduler is not None:
        raise ValueError("--scheduler goes with --executor dask")
    return SerialExecutor() if jobs == 1 else ProcessExecutor(jobs)
