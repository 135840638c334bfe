"""Errors a real-cluster run reports to the user: each says what failed and what to do."""

from __future__ import annotations

from sim.errors import UserError

INSTALL_HINT = "pip install 'scalelab[gke]'"


class CloudError(UserError):
    """A real-cluster run cannot go on; the message names the cause and the fix."""


class MissingDependencyError(CloudError, ImportError):
    """An optional SDK (kubernetes, google-cloud-container, locust) is not installed."""

    def __init__(self, package: str) -> None:
        super().__init__(f"{package} is not installed; it is needed here: {INSTALL_HINT}")
        self.package = package


class UnsupportedScenarioError(CloudError):
    """The scenario needs a feature the chosen backend lacks; ``reasons`` says which and why."""

    def __init__(self, backend: str, reasons: dict[str, str]) -> None:
        lines = [f"backend {backend!r} cannot run this scenario:"]
        lines += [f"  {what}: {why}" for what, why in reasons.items()]
        super().__init__("\n".join(lines))
        self.backend = backend
        self.reasons = reasons


class Aborted(CloudError):
    """The run stopped early (Ctrl-C, the --max-cost guard, an error); teardown has run."""
