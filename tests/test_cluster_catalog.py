"""Machine catalog, GKE allocatable, and kube-system pods: hand-computed cases."""

from __future__ import annotations

import pytest

from sim.cluster.catalog import (
    Resources,
    UnknownMachineTypeError,
    allocatable,
    load_catalog,
    load_system_pods,
    machine_type,
)
from sim.cluster.scheduler import NodeView, PodView, filter_node, schedule

MiB = 2**20
GiB = 2**30
TF_SERVING = Resources.parse("3", "4Gi")  # the lab's image-classifier requests


def test_catalog_has_the_required_sizes_and_a_gpu_option() -> None:
    names = set(load_catalog())
    for family in ("e2", "n1", "n2"):
        for size in (2, 4, 8, 16):
            assert f"{family}-standard-{size}" in names
    gpu = machine_type("n1-standard-4-nvidia-tesla-t4")
    assert (gpu.vcpus, gpu.gpu_type, gpu.gpu_count) == (4, "nvidia-tesla-t4", 1)


@pytest.mark.parametrize(
    ("name", "price"),
    [
        ("n1-standard-4", 0.189999),
        ("e2-standard-4", 0.134012),
        ("n2-standard-4", 0.194236),
        ("n1-standard-4-nvidia-tesla-t4", 0.189999 + 0.35),
    ],
)
def test_prices_match_design(name: str, price: float) -> None:
    assert machine_type(name).price_per_hour == pytest.approx(price, abs=1e-9)


@pytest.mark.parametrize("family", ["n1", "e2", "n2"])
def test_prices_scale_linearly_with_vcpus_within_a_family(family: str) -> None:
    per_vcpu = machine_type(f"{family}-standard-4").price_per_hour / 4
    for size in (2, 8, 16):
        assert machine_type(f"{family}-standard-{size}").price_per_hour == pytest.approx(
            per_vcpu * size, rel=1e-6
        )


def test_unknown_machine_type_lists_the_allowed_names() -> None:
    with pytest.raises(UnknownMachineTypeError, match=r"n1-standard-3.*allowed: e2-standard-16"):
        machine_type("n1-standard-3")


def test_catalog_records_its_provenance() -> None:
    provenance = load_catalog().provenance
    assert provenance["region"] == "us-central1"
    assert "speed_factor" in provenance["assumptions"]


# Hand-computed with GKE's tiers (plan-node-sizes):
#  CPU 4 cores: 60 + 10 + 2*5 = 80m        -> 3920m; 2 cores: 70m -> 1930m;
#      8 cores: 80 + 4*2.5 = 90m -> 7910m;  16 cores: 80 + 12*2.5 = 110m -> 15890m.
#  Memory 15 GiB (n1-standard-4): 1 + 0.8 + 0.7 = 2.5 GiB, + 100 MiB -> 12700 MiB.
#  Memory 16 GiB (e2/n2-standard-4): 1 + 0.8 + 0.8 = 2.6 GiB, + 100 MiB -> 13.4 GiB - 100 MiB.
@pytest.mark.parametrize(
    ("name", "cpu", "memory"),
    [
        ("n1-standard-4", 3920, 12700 * MiB),
        ("e2-standard-4", 3920, 16 * GiB - (26 * GiB + 9) // 10 - 100 * MiB),
        ("n2-standard-4", 3920, 16 * GiB - (26 * GiB + 9) // 10 - 100 * MiB),
        ("n1-standard-2", 1930, 7.5 * GiB - 1.7 * GiB - 100 * MiB),  # 1 + 0.2*3.5 GiB
        ("n1-standard-8", 7910, None),
        ("n1-standard-16", 15890, None),
    ],
)
def test_allocatable_by_gke_formula(name: str, cpu: int, memory: float | None) -> None:
    alloc = allocatable(machine_type(name))
    assert alloc.cpu_milli == cpu
    if memory is not None:
        assert alloc.memory_bytes == pytest.approx(memory, abs=1)


def test_n1_standard_4_allocatable_exactly() -> None:
    assert allocatable(machine_type("n1-standard-4")) == Resources(3920, 12700 * MiB, 0)


def test_gpu_machine_allocates_its_gpu() -> None:
    assert allocatable(machine_type("n1-standard-4-nvidia-tesla-t4")).gpu == 1


def test_system_pod_totals() -> None:
    pods = load_system_pods()
    n1 = machine_type("n1-standard-4")
    assert pods.node_overhead(n1).cpu_milli == 220
    assert pods.cluster_overhead().cpu_milli == 393
    gpu = machine_type("n1-standard-4-nvidia-tesla-t4")
    assert pods.node_overhead(gpu).cpu_milli == 270  # + the device plugin
    assert all(p.namespace == "kube-system" for p in (*pods.per_node, *pods.per_cluster))


def _node(name: str, pods: list[PodView]) -> NodeView:
    view = NodeView(name, allocatable(machine_type("n1-standard-4")))
    for pod in pods:
        view = view.with_pod(pod)
    return view


def test_exactly_one_tf_serving_pod_fits_per_n1_standard_4_node() -> None:
    system = load_system_pods()
    daemons = [PodView.from_system_pod(p) for p in system.for_node(machine_type("n1-standard-4"))]
    extras = [PodView.from_system_pod(p) for p in system.per_cluster]
    tf = [PodView(f"tf-{i}", TF_SERVING) for i in range(3)]
    for pods in (daemons, daemons + extras):  # an ordinary node, and the kube-system node
        node = _node("n", pods)
        assert filter_node(tf[0], node).fits
        assert not filter_node(tf[1], node.with_pod(tf[0])).fits
    # Three nodes (one with the extras), four replicas: the fourth stays Pending.
    nodes = [_node("n1", daemons + extras), _node("n2", daemons), _node("n3", daemons)]
    for pod in tf:
        placement = schedule(pod, nodes)
        assert placement.node is not None
        nodes = [n.with_pod(pod) if n.name == placement.node else n for n in nodes]
    fourth = schedule(PodView("tf-3", TF_SERVING), nodes)
    assert fourth.node is None
    assert fourth.message == "0/3 nodes are available: 3 Insufficient cpu."


def test_kube_dns_ladder() -> None:
    dns = next(p for p in load_system_pods().per_cluster if p.name == "kube-dns")
    assert dns.replicas(1, 4) == 1
    assert dns.replicas(2, 8) == 2  # preventSinglePointFailure
    assert dns.replicas(17, 68) == 2
    assert dns.replicas(40, 160) == 3  # ceil(40 / 16)


def test_resources_arithmetic() -> None:
    a = Resources.parse("1500m", "1Gi")
    b = Resources.parse("500m", "512Mi", gpu=1)
    assert a + b == Resources(2000, GiB + 512 * MiB, 1)
    assert a - b == Resources(1000, 512 * MiB, -1)
    assert 2 * b == Resources(1000, GiB, 2)
    assert b.insufficient(a) == ("nvidia.com/gpu",)
    assert Resources(1, 0).insufficient(Resources(0, 0)) == ("cpu",)
    assert Resources(0, 5).fits_in(Resources(0, 5))
