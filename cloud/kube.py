"""Any existing cluster from a kubeconfig: nothing to provision, only the workload.

The cluster is used as it is: its node pools, autoscaler and control-plane flags are its
own, so a scenario that asks for flags of its own is refused (they cannot be set from here),
and the cost assumes the scenario's pools describe the cluster's machines.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cloud.backend import BACKENDS, Backend, Feature


@BACKENDS.register("kube")
class KubeBackend(Backend):
    UNSUPPORTED: ClassVar[dict[Feature, str]] = {
        Feature.CA_FLAGS: "the cluster's own autoscaler runs with its own flags; scalelab does "
        "not manage it",
        Feature.HPA_CONTROLLER_FLAGS: "the cluster's kube-controller-manager flags are its own",
        Feature.METRICS_RESOLUTION: "the cluster's metrics-server resolution is its own",
        Feature.SCHEDULER_SCORING: "the cluster's scheduler configuration is its own",
        Feature.DETERMINISTIC_REPLAY: "a real cluster: timing, placement and latency vary",
    }

    def _provision(self) -> None:
        self.say(f"using the cluster of kubeconfig context {self.settings.context or '(current)'}")

    def _connect(self) -> Any:
        from cloud.credentials import kubeconfig_api_client

        return kubeconfig_api_client(self.settings.kubeconfig, self.settings.context)
