"""The scenario settings a reader of a run needs beside its numbers (``summary["settings"]``):
the HPA spec, the node pools, the container's resources, the load and the SLO, as plain data
so the report of a real-cluster run shows the same."""

from __future__ import annotations

from typing import Any

from sim.scenario import LocustLoad, Scenario


def settings(scenario: Scenario) -> dict[str, Any]:
    """Plain, JSON-ready settings that shape the run."""
    hpa = scenario.hpa
    targets = []
    for metric in (hpa.metrics or []) if hpa is not None else []:
        resource = getattr(metric, "resource", None)
        if resource is not None:
            target = resource.target
            value = target.averageUtilization
            targets.append(
                f"{resource.name} {value}%"
                if value is not None
                else f"{resource.name} {target.averageValue or target.value}"
            )
        else:
            targets.append(str(metric.type))
    requests = scenario.deployment.resources.requests
    limits = scenario.deployment.resources.limits
    slo = scenario.slo
    return {
        "hpa": None
        if hpa is None
        else {
            "minReplicas": hpa.minReplicas,
            "maxReplicas": hpa.maxReplicas,
            "targets": targets,
        },
        "pools": [
            {
                "name": p.name,
                "machine_type": p.machine_type,
                "min_nodes": p.min_nodes,
                "max_nodes": p.max_nodes,
            }
            for p in scenario.cluster.pools
        ],
        "cluster_autoscaler": scenario.cluster.autoscaler.enabled,
        "deployment": {
            "image": scenario.deployment.image,
            "cpu_request_milli": requests.cpu,
            "memory_request": requests.memory,
            "cpu_limit_milli": limits.cpu,
        },
        "load": {
            "kind": scenario.load.kind,
            "closed_loop": isinstance(scenario.load, LocustLoad),
        },
        "slo": None if slo is None else slo.model_dump(exclude_none=True),
        "start": scenario.start,
    }
