"""Undo what a run created, in reverse order, whatever happened; say what was removed.

Every create goes into a :class:`Ledger` as soon as the API accepted it, with the callable
that deletes it and a predicate that recognises "already gone" (HTTP 404 from the Kubernetes
API, ``NotFound`` from GKE). :meth:`Ledger.teardown` tries every entry even when one fails
(retrying transient errors), and the report lists removed, already gone, failed and kept
resources, so nothing is left running by accident, or if it is, the user is told what and how
to remove it (``scalelab cloud cleanup`` finds leftovers by label).
"""

from __future__ import annotations

import contextlib
import enum
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

Say = Callable[[str], None]


class Outcome(enum.Enum):
    REMOVED = "removed"
    ALREADY_GONE = "already gone"
    FAILED = "FAILED"
    KEPT = "kept (--keep)"


@dataclass
class Entry:
    """One created resource and how to delete it."""

    description: str
    delete: Callable[[], object]
    gone: Callable[[BaseException], bool] = lambda _err: False
    created_at: float = field(default_factory=time.time)


@dataclass
class TeardownReport:
    items: list[tuple[str, Outcome, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(outcome is not Outcome.FAILED for _, outcome, _ in self.items)

    @property
    def failed(self) -> list[str]:
        return [what for what, outcome, _ in self.items if outcome is Outcome.FAILED]

    def render(self) -> str:
        if not self.items:
            return "teardown: nothing was created"
        lines = ["teardown:"]
        for what, outcome, detail in self.items:
            lines.append(f"  {outcome.value}: {what}" + (f" ({detail})" if detail else ""))
        if not self.ok:
            lines.append(
                "some resources may still be running (and billing): remove them with "
                "'scalelab cloud cleanup' or the cloud console"
            )
        return "\n".join(lines)


class Ledger:
    """What this run created, in order; optionally journalled to a JSON-lines file."""

    def __init__(
        self,
        journal: Path | None = None,
        *,
        attempts: int = 3,
        backoff_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.entries: list[Entry] = []
        self.journal = journal
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._sleep = sleep

    def record(
        self,
        description: str,
        delete: Callable[[], object],
        gone: Callable[[BaseException], bool] | None = None,
    ) -> Entry:
        entry = Entry(description, delete, gone or (lambda _err: False))
        self.entries.append(entry)
        self._write({"event": "created", "what": description, "t": entry.created_at})
        return entry

    def forget(self, entry: Entry) -> None:
        """The create was refused after all: nothing of ours to delete."""
        self.entries.remove(entry)
        self._write({"event": "not created", "what": entry.description})

    def _write(self, record: dict[str, Any]) -> None:
        if self.journal is not None:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            with open(self.journal, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def keep(self) -> TeardownReport:
        """``--keep``: remove nothing, list everything that stays."""
        return TeardownReport([(e.description, Outcome.KEPT, "") for e in self.entries])

    def teardown(self, say: Say | None = None) -> TeardownReport:
        """Delete every entry, newest first; one failure never stops the others."""
        report = TeardownReport()
        remaining: list[Entry] = []
        say = quiet(say)
        with shield_interrupts(say):
            for entry in reversed(self.entries):
                outcome, detail = self._delete(entry, say)
                report.items.append((entry.description, outcome, detail))
                self._write({"event": outcome.name.lower(), "what": entry.description})
                if outcome is Outcome.FAILED:
                    remaining.append(entry)
        self.entries = remaining[::-1]  # a second teardown retries only what failed
        return report

    def _delete(self, entry: Entry, say: Say | None) -> tuple[Outcome, str]:
        error: BaseException | None = None
        for attempt in range(1, self.attempts + 1):
            if say is not None:
                say(f"deleting {entry.description}")
            try:
                entry.delete()
                return Outcome.REMOVED, ""
            except Exception as err:
                if entry.gone(err):
                    return Outcome.ALREADY_GONE, ""
                error = err
                if attempt < self.attempts:
                    wait = self.backoff_s * attempt
                    if say is not None:
                        say(f"  failed ({type(err).__name__}: {err}); trying again in {wait:g} s")
                    self._sleep(wait)
        return Outcome.FAILED, f"{type(error).__name__}: {error}"


STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""Signals that end a run like Ctrl-C: SIGTERM (CI cancel, ``kill``), SIGHUP (the terminal was
closed)."""


def quiet(say: Say | None) -> Say | None:
    """``say`` that cannot stop a teardown: after SIGHUP the terminal is gone and writing to
    it raises OSError (EIO); the ledger's journal still records every outcome."""
    if say is None:
        return None

    def safe(text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            say(text)

    return safe


@contextlib.contextmanager
def _handlers(signals: tuple[signal.Signals, ...], handler: Any) -> Iterator[None]:
    """Install ``handler`` for ``signals`` and restore the previous ones after; only the main
    thread can own signal handlers, elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def shield_interrupts(say: Say | None = None) -> Iterator[None]:
    """Ctrl-C, SIGTERM or SIGHUP during teardown would leave things running: tell the user (if
    the terminal is still there) and carry on."""
    tell = quiet(say)

    def refuse(signum: int, _frame: FrameType | None) -> None:
        if tell is not None:
            name = signal.Signals(signum).name
            tell(f"{name} during teardown: it finishes first so nothing is left running")

    with _handlers((signal.SIGINT, *STOP_SIGNALS), refuse):
        yield


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP tear down like Ctrl-C does (the run raises KeyboardInterrupt); keep
    this around the teardown too, so a second signal meets :func:`shield_interrupts` rather
    than the default action (which would kill the process mid-delete)."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    with _handlers(STOP_SIGNALS, interrupt):
        yield
