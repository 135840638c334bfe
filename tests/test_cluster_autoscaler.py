"""Cluster-autoscaler decision core: hand-computed cases, rule table, and properties."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sim.cluster.autoscaler import decide
from sim.cluster.ca.drainability import (
    BlockingReason,
    DrainContext,
    Outcome,
    default_rules,
    drainable,
    pods_to_move,
)
from sim.cluster.ca.estimator import estimate
from sim.cluster.ca.model import (
    AutoscalerDecision,
    AutoscalerState,
    ClusterSnapshot,
    EventReason,
    NodePhase,
    NodePool,
    NodeSnapshot,
    ProvisioningDelay,
    ScaleDownResult,
    ScaleUpResult,
    UnremovableReason,
    advance,
)
from sim.cluster.ca.options import AutoscalerOptions, Expander, Profile
from sim.cluster.catalog import Resources, load_system_pods, machine_type
from sim.cluster.scheduler import OwnerKind, PdbState, PodView, Scoring, schedule
from tests.cluster_strategies import snapshots, states, too_big_for_every_machine

GiB = 2**30
N1 = machine_type("n1-standard-4")
TF = Resources.parse("3", "4Gi")
POOL = "default-pool"


def lab_pool(
    min_nodes: int = 1, max_nodes: int = 3, name: str = POOL, machine: str = "n1-standard-4"
) -> NodePool:
    return NodePool(name, machine_type(machine), min_nodes, max_nodes)


DAEMONS = lab_pool().template_pods
EXTRAS = tuple(PodView.from_system_pod(p) for p in load_system_pods().per_cluster)


def tf(i: int, created: float = 0.0) -> PodView:
    return PodView(f"image-classifier-{i}", TF, owner_name="image-classifier", created_at=created)


def small(name: str, cpu: int = 500, created: float = 0.0) -> PodView:
    return PodView(name, Resources(cpu, GiB // 4), owner_name="small", created_at=created)


def ready(
    name: str, *pods: PodView, pool: str = POOL, extras: bool = False, created: float = 0.0
) -> NodeSnapshot:
    base = DAEMONS + (EXTRAS if extras else ())
    return NodeSnapshot(name, pool, NodePhase.READY, created, base + pods)


def snap(
    nodes: Iterable[NodeSnapshot],
    pending: Iterable[PodView] = (),
    pools: Iterable[NodePool] | None = None,
) -> ClusterSnapshot:
    return ClusterSnapshot(tuple(pools or (lab_pool(),)), tuple(nodes), tuple(pending))


def reasons(decision: AutoscalerDecision, reason: EventReason) -> list[tuple[str, str]]:
    return [(e.involved, e.message) for e in decision.events if e.reason is reason]


# ------------------------------------------------------------------------------- scale-up


def test_one_pending_pod_scales_up_by_one() -> None:
    cluster = snap([ready("n1", tf(0), extras=True)], [tf(1, created=100.0)])
    d = decide(cluster, AutoscalerState(), 110.0)
    assert d.scale_up == {POOL: 1}
    assert d.scale_up_result is ScaleUpResult.SUCCESSFUL
    assert reasons(d, EventReason.SCALED_UP_GROUP) == [
        ("", "Scale-up: setting group default-pool size to 2 instead of 1 (max: 3)")
    ]
    assert reasons(d, EventReason.TRIGGERED_SCALE_UP) == [
        ("image-classifier-1", "pod triggered scale-up: [{default-pool 1->2 (max: 3)}]")
    ]
    assert d.state.last_scale_up_time == 110.0
    assert d.scale_down_result is ScaleDownResult.IN_COOLDOWN  # this loop's scale-up


def test_one_node_per_tf_serving_pod() -> None:
    cluster = snap([ready("n1", tf(0), extras=True)], [tf(1), tf(2)])
    assert decide(cluster, AutoscalerState(), 100.0).scale_up == {POOL: 2}


def test_never_above_max_nodes() -> None:
    cluster = snap([ready("n1", tf(0), extras=True)], [tf(i) for i in range(1, 6)])
    d = decide(cluster, AutoscalerState(), 100.0)
    assert d.scale_up == {POOL: 2}
    assert "size to 3 instead of 1 (max: 3)" in reasons(d, EventReason.SCALED_UP_GROUP)[0][1]


def test_lab_fourth_replica_at_max_gets_a_clear_event() -> None:
    nodes = [ready("n1", tf(0), extras=True), ready("n2", tf(1)), ready("n3", tf(2))]
    d = decide(snap(nodes, [tf(3)]), AutoscalerState(), 100.0)
    assert d.scale_up == {}
    assert d.scale_up_result is ScaleUpResult.NO_OPTIONS_AVAILABLE
    assert reasons(d, EventReason.NOT_TRIGGER_SCALE_UP) == [
        ("image-classifier-3", "pod didn't trigger scale-up: 1 max node group size reached")
    ]


def test_pod_too_big_for_any_machine_does_not_scale_up() -> None:
    huge = PodView("huge", too_big_for_every_machine(), owner_name="huge")
    gpu = NodePool("gpu-pool", machine_type("n1-standard-4-nvidia-tesla-t4"), 0, 2)
    d = decide(
        snap([ready("n1", extras=True)], [huge], [lab_pool(), gpu]), AutoscalerState(), 100.0
    )
    assert d.scale_up == {}
    assert reasons(d, EventReason.NOT_TRIGGER_SCALE_UP) == [
        (
            "huge",
            "pod didn't trigger scale-up: 1 Insufficient cpu, "
            "1 node(s) had untolerated taint {nvidia.com/gpu: present}",
        )
    ]


def test_upcoming_node_counts_as_capacity() -> None:
    booting = NodeSnapshot("n2", POOL, NodePhase.PROVISIONING, created_at=100.0)
    cluster = snap([ready("n1", tf(0), extras=True), booting], [tf(1, created=100.0)])
    d = decide(cluster, AutoscalerState(), 120.0)
    assert d.scale_up == {}
    assert d.scale_up_result is ScaleUpResult.NOT_NEEDED


def test_pending_pod_that_fits_an_existing_node_needs_no_scale_up() -> None:
    cluster = snap([ready("n1", extras=True)], [tf(0, created=0.0)])
    assert decide(cluster, AutoscalerState(), 100.0).scale_up_result is ScaleUpResult.NOT_NEEDED


def test_brand_new_pods_wait_one_loop() -> None:
    cluster = snap([ready("n1", tf(0), extras=True)], [tf(1, created=99.0)])
    d = decide(cluster, AutoscalerState(), 100.0)
    assert d.scale_up == {} and d.scale_up_result is ScaleUpResult.IN_COOLDOWN
    assert d.scale_down_result is ScaleDownResult.IN_COOLDOWN
    assert decide(cluster, d.state, 110.0).scale_up == {POOL: 1}


def test_pods_of_a_draining_node_are_provided_for() -> None:
    draining = NodeSnapshot("n2", POOL, NodePhase.DRAINING, 0.0, (*DAEMONS, tf(1)))
    d = decide(snap([ready("n1", tf(0), extras=True), draining]), AutoscalerState(), 100.0)
    assert d.scale_up == {POOL: 1}


def test_node_that_never_becomes_ready_is_given_up_and_the_pool_backs_off() -> None:
    stuck = NodeSnapshot("n2", POOL, NodePhase.PROVISIONING, created_at=0.0)
    cluster = snap([ready("n1", tf(0), extras=True), stuck], [tf(1, created=0.0)])
    assert decide(cluster, AutoscalerState(), 900.0).remove_unregistered == ()  # not yet: strict
    d = decide(cluster, AutoscalerState(), 901.0)
    assert d.remove_unregistered == ("n2",)
    assert reasons(d, EventReason.DELETE_UNREGISTERED) == [("", "Removed unregistered node n2")]
    assert [e.type for e in d.events if e.reason is EventReason.SCALE_UP_TIMED_OUT] == ["Warning"]
    assert d.state.backoff[POOL].until == 901.0 + 300.0
    assert d.scale_up == {}
    assert reasons(d, EventReason.NOT_TRIGGER_SCALE_UP) == [
        ("image-classifier-1", "pod didn't trigger scale-up: 1 in backoff after failed scale-up")
    ]
    after = snap([ready("n1", tf(0), extras=True)], [tf(1, created=0.0)])
    assert decide(after, d.state, 1201.0).scale_up == {}  # until is inclusive
    assert decide(after, d.state, 1202.0).scale_up == {POOL: 1}


def test_giving_up_respects_min_size() -> None:
    stuck = NodeSnapshot("n2", POOL, NodePhase.PROVISIONING, created_at=0.0)
    cluster = snap([ready("n1", extras=True), stuck], pools=[lab_pool(min_nodes=2)])
    d = decide(cluster, AutoscalerState(), 1000.0)
    assert d.remove_unregistered == ()
    assert POOL in d.state.backoff


def test_node_selector_picks_the_gpu_pool_after_the_gpu_buffer() -> None:
    gpu = NodePool(
        "gpu-pool",
        machine_type("n1-standard-4-nvidia-tesla-t4"),
        0,
        2,
        labels={"accelerator": "t4"},
    )
    gpu_pod = PodView(
        "gpu-0",
        Resources.parse("3", "4Gi", gpu=1),
        node_selector={"cloud.google.com/gke-nodepool": "gpu-pool"},
        owner_name="gpu-serving",
        created_at=100.0,
    )
    cluster = snap([ready("n1", extras=True)], [gpu_pod], [lab_pool(), gpu])
    assert decide(cluster, AutoscalerState(), 120.0).scale_up_result is ScaleUpResult.IN_COOLDOWN
    d = decide(cluster, AutoscalerState(), 131.0)
    assert d.scale_up == {"gpu-pool": 1}


def test_max_nodes_total() -> None:
    opts = AutoscalerOptions(max_nodes_total=1)
    d = decide(snap([ready("n1", tf(0), extras=True)], [tf(1)]), AutoscalerState(), 100.0, opts)
    assert d.scale_up == {} and d.scale_up_result is ScaleUpResult.LIMITED_BY_MAX_NODES_TOTAL
    assert reasons(d, EventReason.NOT_TRIGGER_SCALE_UP) == [
        ("image-classifier-1", "pod didn't trigger scale-up: max total nodes in cluster reached")
    ]


def test_binpacking_estimate_hand_computed() -> None:
    # An n1-standard-4 template has 3920m - 220m = 3700m free: two 1500m pods per node.
    pods = [small(f"s{i}", 1500) for i in range(5)]
    est = estimate([pods], NodePool.of("p", "n1-standard-4", 0, 10).template())
    assert (est.node_count, len(est.pods)) == (3, 5)
    capped = estimate([pods], NodePool.of("p", "n1-standard-4", 0, 10).template(), max_nodes=2)
    assert (capped.node_count, len(capped.pods)) == (2, 4)
    # Bigger pods first: a 3000m pod and three 600m pods need two nodes, not three.
    mixed = [[small("big", 3000)], [small(f"m{i}", 600) for i in range(3)]]
    assert estimate(mixed, lab_pool().template()).node_count == 2


# ------------------------------------------------------------------------------- expanders


def _two_pool_choice(
    expander: Expander, a: str, b: str, pending: list[PodView], seed: int = 0, b_max: int = 3
) -> str:
    pools = [lab_pool(0, 3, "a", a), lab_pool(0, b_max, "b", b)]
    opts = AutoscalerOptions(expander=expander)
    d = decide(
        snap([], pending, pools), AutoscalerState(), 100.0, opts, np.random.default_rng(seed)
    )
    (chosen,) = d.scale_up
    return chosen


def test_least_waste_prefers_the_snuggest_machine() -> None:
    # 3 CPU / 4 GiB on 4 vCPU: n1 wastes 0.25 + 11/15, e2 wastes 0.25 + 12/16: n1 wins.
    assert _two_pool_choice(Expander.LEAST_WASTE, "e2-standard-4", "n1-standard-4", [tf(0)]) == "b"


def test_most_pods_prefers_the_option_helping_most_pods() -> None:
    # One more node each: an n1-standard-8 fits two 3-CPU pods, an n1-standard-4 one.
    pending = [tf(i) for i in range(3)]
    pools = [lab_pool(0, 1, "a", "n1-standard-4"), lab_pool(0, 1, "b", "n1-standard-8")]
    d = decide(
        snap([], pending, pools),
        AutoscalerState(),
        100.0,
        AutoscalerOptions(expander=Expander.MOST_PODS),
    )
    assert d.scale_up == {"b": 1}


def test_price_prefers_cheaper_nodes_and_avoids_gpus() -> None:
    assert _two_pool_choice(Expander.PRICE, "n1-standard-4", "e2-standard-4", [tf(0)]) == "b"
    gpu = replace(lab_pool(0, 3, "a", "n1-standard-4-nvidia-tesla-t4"), taints=())
    pools = [gpu, lab_pool(0, 3, "b", "n2-standard-4")]
    d = decide(
        snap([], [tf(0)], pools),
        AutoscalerState(),
        100.0,
        AutoscalerOptions(expander=Expander.PRICE),
    )
    assert d.scale_up == {"b": 1}


def test_random_expander_uses_the_generator() -> None:
    chosen = {
        _two_pool_choice(Expander.RANDOM, "n1-standard-4", "e2-standard-4", [tf(0)], seed)
        for seed in range(20)
    }
    assert chosen == {"a", "b"}
    assert _two_pool_choice(Expander.RANDOM, "n1-standard-4", "e2-standard-4", [tf(0)], 3) == (
        _two_pool_choice(Expander.RANDOM, "n1-standard-4", "e2-standard-4", [tf(0)], 3)
    )


# ------------------------------------------------------------------------------ scale-down


def test_empty_node_removed_only_after_ten_minutes_unneeded() -> None:
    cluster = snap([ready("n1", tf(0), extras=True), ready("n2")])
    d = decide(cluster, AutoscalerState(), 1000.0)
    assert d.unneeded == ("n2",)
    assert d.unremovable == {
        "n1": UnremovableReason.NOT_UNDERUTILIZED,
        "n2": UnremovableReason.NOT_UNNEEDED_LONG_ENOUGH,
    }
    state = d.state
    for now in (1010.0, 1600.0):  # 1000 + 600 is not *after* 1600
        d = decide(cluster, state, now)
        assert d.scale_down == ()
        state = d.state
    d = decide(cluster, state, 1610.0)
    assert d.scale_down_empty == ("n2",) and d.scale_down_drain == ()
    assert d.scale_down_result is ScaleDownResult.NODE_DELETE_STARTED
    assert reasons(d, EventReason.SCALE_DOWN_EMPTY) == [
        ("", 'Scale-down: removing empty node "n2"')
    ]
    assert d.state.deleting == {"n2": False}
    assert d.state.last_scale_down_delete_time == 1610.0


def test_no_scale_down_within_ten_minutes_after_a_scale_up() -> None:
    cluster = snap([ready("n1", tf(0), extras=True), ready("n2")])
    state = AutoscalerState(unneeded_since={"n2": 0.0}, last_scale_up_time=1500.0)
    d = decide(cluster, state, 2000.0)
    assert d.scale_down == () and d.scale_down_result is ScaleDownResult.IN_COOLDOWN
    assert d.unneeded == ("n2",)  # the timer keeps running
    assert decide(cluster, state, 2099.5).scale_down == ()
    assert decide(cluster, state, 2100.0).scale_down == ("n2",)  # cooldown while 1500+600 > now


def test_scale_down_pauses_after_a_failure_and_after_a_delete() -> None:
    cluster = snap([ready("n1", tf(0), extras=True), ready("n2")])
    state = AutoscalerState(unneeded_since={"n2": 0.0}).record_scale_down_failure(1000.0, "x")
    assert decide(cluster, state, 1179.0).scale_down == ()
    assert decide(cluster, state, 1180.0).scale_down == ("n2",)
    state = AutoscalerState(unneeded_since={"n2": 0.0}, last_scale_down_delete_time=1000.0)
    assert decide(cluster, state, 1005.0).scale_down == ()  # delay after delete = scan interval
    assert decide(cluster, state, 1010.0).scale_down == ("n2",)


def test_empty_nodes_go_in_bulk_of_ten() -> None:
    empties = [ready(f"e{i:02d}") for i in range(12)]
    cluster = snap([ready("n1", extras=True), *empties], pools=[lab_pool(0, 20)])
    state = AutoscalerState(unneeded_since={n.name: 0.0 for n in empties})
    d = decide(cluster, state, 700.0)
    assert d.scale_down_empty == tuple(f"e{i:02d}" for i in range(10))
    assert d.unremovable["n1"] is UnremovableReason.BLOCKED_BY_POD
    assert d.blocking_pods["n1"] == "kube-dns (UnmovableKubeSystemPod)"


def test_non_empty_nodes_go_one_at_a_time() -> None:
    nodes = [
        ready("big", extras=True),
        ready("a", small("a-0")),
        ready("b", small("b-0")),
        ready("c", small("c-0")),
    ]
    cluster = snap(nodes, pools=[lab_pool(0, 5)])
    state = AutoscalerState(unneeded_since={"a": 0.0, "b": 0.0, "c": 0.0})
    d = decide(cluster, state, 700.0)
    assert d.scale_down_empty == () and d.scale_down_drain == ("a",)
    assert d.pods_to_evict == {"a": ("a-0",)}
    assert reasons(d, EventReason.SCALE_DOWN)[0][1].startswith(
        "Scale-down: removing node a, utilization:"
    )
    # Next loop: "a" is still draining, so no second drain starts.
    draining = replace(nodes[1], phase=NodePhase.DRAINING)
    d2 = decide(snap([nodes[0], draining, *nodes[2:]], pools=[lab_pool(0, 5)]), d.state, 710.0)
    assert d2.scale_down == ()
    assert d2.unremovable["a"] is UnremovableReason.CURRENTLY_BEING_DELETED


def test_never_below_min_nodes() -> None:
    cluster = snap(
        [ready("n1", extras=True), ready("n2"), ready("n3")], pools=[lab_pool(min_nodes=2)]
    )
    state = AutoscalerState(unneeded_since={"n2": 0.0, "n3": 0.0})
    d = decide(cluster, state, 700.0)
    assert d.scale_down == ("n2",)
    assert d.unremovable["n3"] is UnremovableReason.NODE_GROUP_MIN_SIZE_REACHED
    at_min = snap([ready("n1", extras=True), ready("n3")], pools=[lab_pool(min_nodes=2)])
    d = decide(at_min, replace(d.state, deleting={}), 800.0)
    assert d.scale_down == ()


def test_pods_need_a_place_to_go() -> None:
    a, b = ready("a", small("a-0", 1500)), ready("b", small("b-0", 1500))
    cluster = snap([a, b], pools=[lab_pool(0, 3)])
    d = decide(cluster, AutoscalerState(), 100.0)
    assert d.unneeded == ("a",)  # a's pod fits on b, then b's two pods fit nowhere
    assert d.unremovable["b"] is UnremovableReason.NO_PLACE_TO_MOVE_PODS
    assert d.state.unremovable_until["b"] == 400.0
    d = decide(cluster, d.state, 110.0)
    assert d.unremovable["b"] is UnremovableReason.RECENTLY_UNREMOVABLE


def test_a_node_at_exactly_the_threshold_is_not_underutilized() -> None:
    # 220m of DaemonSets + 1740m = 1960m = exactly 0.5 of 3920m: not underutilized, as upstream
    # eligibility.go (`utilization >= threshold` -> false); 1739m is below and is unneeded.
    for cpu, unneeded in ((1739, True), (1740, False), (1741, False)):
        cluster = snap(
            [ready("n1", extras=True), ready("n2", small("s", cpu))], pools=[lab_pool(0, 3)]
        )
        d = decide(cluster, AutoscalerState(), 100.0)
        assert ("n2" in d.unneeded) is unneeded


def test_scale_down_disabled_annotation_and_option() -> None:
    node = replace(ready("n2"), scale_down_disabled=True)
    d = decide(
        snap([ready("n1", extras=True), node], pools=[lab_pool(0, 3)]), AutoscalerState(), 100.0
    )
    assert d.unremovable["n2"] is UnremovableReason.SCALE_DOWN_DISABLED_ANNOTATION
    d = decide(
        snap([ready("n1", extras=True), ready("n2")]),
        AutoscalerState(),
        100.0,
        AutoscalerOptions(scale_down_enabled=False),
    )
    assert d.scale_down_result is ScaleDownResult.DISABLED and d.unneeded == ()


def test_optimize_utilization_profile_scales_down_sooner() -> None:
    opts = AutoscalerOptions(profile="optimize-utilization")  # type: ignore[arg-type]
    assert opts.profile is Profile.OPTIMIZE_UTILIZATION
    assert opts.scheduler_scoring is Scoring.MOST_ALLOCATED
    cluster = snap([ready("n1", tf(0), extras=True), ready("n2")])
    state = AutoscalerState(unneeded_since={"n2": 0.0})
    assert decide(cluster, state, 60.0, opts).scale_down == ()
    assert decide(cluster, state, 61.0, opts).scale_down == ("n2",)
    assert decide(cluster, state, 61.0).scale_down == ()  # balanced: 10 minutes


def test_gpu_node_uses_gpu_utilization() -> None:
    gpu = NodePool("gpu-pool", machine_type("n1-standard-4-nvidia-tesla-t4"), 0, 2)
    busy_cpu = PodView(
        "cpu-hog", Resources(3000, GiB), owner_name="x", tolerations=frozenset({"nvidia.com/gpu"})
    )
    node = NodeSnapshot("g1", "gpu-pool", NodePhase.READY, 0.0, (*gpu.template_pods, busy_cpu))
    d = decide(
        snap([ready("n1", extras=True), node], pools=[lab_pool(), gpu]), AutoscalerState(), 100.0
    )
    assert d.unremovable.get("g1") is not UnremovableReason.NOT_UNDERUTILIZED  # 0 GPUs in use


# --------------------------------------------------------------------------- drainability


@pytest.mark.parametrize(
    ("pod", "outcome", "reason"),
    [
        (
            PodView("proxy", namespace="kube-system", owner=OwnerKind.MIRROR),
            Outcome.SKIP_DRAIN,
            None,
        ),
        (
            PodView("fluentbit", namespace="kube-system", owner=OwnerKind.DAEMON_SET),
            Outcome.DRAIN_OK,
            None,
        ),
        (PodView("bare", owner=OwnerKind.NONE, safe_to_evict=True), Outcome.DRAIN_OK, None),
        (PodView("bare", owner=OwnerKind.NONE), Outcome.BLOCK_DRAIN, BlockingReason.NOT_REPLICATED),
        (
            PodView("dns", namespace="kube-system"),
            Outcome.BLOCK_DRAIN,
            BlockingReason.UNMOVABLE_KUBE_SYSTEM_POD,
        ),
        (PodView("dns", namespace="kube-system", pdb=PdbState.ALLOWS), Outcome.UNDEFINED, None),
        (
            PodView("app", safe_to_evict=False),
            Outcome.BLOCK_DRAIN,
            BlockingReason.NOT_SAFE_TO_EVICT_ANNOTATION,
        ),
        (
            PodView("app", local_storage=True),
            Outcome.BLOCK_DRAIN,
            BlockingReason.LOCAL_STORAGE_REQUESTED,
        ),
        (PodView("app", pdb=PdbState.BLOCKS), Outcome.BLOCK_DRAIN, BlockingReason.NOT_ENOUGH_PDB),
        (PodView("app"), Outcome.UNDEFINED, None),
    ],
)
def test_drainability_rules(pod: PodView, outcome: Outcome, reason: BlockingReason | None) -> None:
    status = drainable(pod, default_rules(), DrainContext(now=0.0))
    assert (status.outcome, status.reason) == (outcome, reason)


def test_rules_follow_the_flags() -> None:
    dns = PodView("dns", namespace="kube-system", created_at=0.0)
    lenient = default_rules(AutoscalerOptions(skip_nodes_with_system_pods=False))
    assert drainable(dns, lenient, DrainContext(0.0)).outcome is Outcome.UNDEFINED
    timed = default_rules(AutoscalerOptions(blocking_system_pod_disruption_timeout=3600.0))
    assert drainable(dns, timed, DrainContext(3600.0)).outcome is Outcome.BLOCK_DRAIN
    assert drainable(dns, timed, DrainContext(3600.5)).outcome is Outcome.DRAIN_OK
    disk = PodView("app", local_storage=True)
    assert (
        drainable(
            disk,
            default_rules(AutoscalerOptions(skip_nodes_with_local_storage=False)),
            DrainContext(0.0),
        ).outcome
        is Outcome.UNDEFINED
    )


def test_pods_to_move_sorts_a_node() -> None:
    moved = pods_to_move((*DAEMONS, tf(0)), default_rules(), DrainContext(0.0))
    assert [p.name for p in moved.movable] == ["image-classifier-0"]
    assert {p.name for p in moved.daemonset} == {"fluentbit-gke", "gke-metrics-agent", "pdcsi-node"}
    assert not moved.blocked


# --------------------------------------------------------------------------- options, life


def test_options_validate_and_parse() -> None:
    with pytest.raises(ValueError, match="utilization_threshold must be within"):
        AutoscalerOptions(utilization_threshold=1.5)
    with pytest.raises(ValueError, match="unknown cluster-autoscaler option"):
        AutoscalerOptions.from_mapping({"scan_intervall": "10s"})
    opts = AutoscalerOptions.from_mapping(
        {
            "scale_down_unneeded_time": "5m",
            "optimize_utilization": {"scale_down_unneeded_time": "2m"},
        }
    )
    assert opts.scale_down_unneeded_time == 300.0
    assert opts.optimize_utilization.scale_down_unneeded_time == 120.0
    assert opts.delay_after_delete == 10.0


def test_node_lifecycle_and_provisioning_delay() -> None:
    assert advance(NodePhase.REQUESTED, NodePhase.PROVISIONING) is NodePhase.PROVISIONING
    with pytest.raises(ValueError, match="cannot go from ready to provisioning"):
        advance(NodePhase.READY, NodePhase.PROVISIONING)
    delay = ProvisioningDelay()
    draws = [delay.sample(np.random.default_rng(s)) for s in range(50)]
    assert all(50.0 <= x <= 80.0 for x in draws)
    assert delay.sample(np.random.default_rng(1)) == delay.sample(np.random.default_rng(1))
    assert ProvisioningDelay("constant", low=200.0).sample(np.random.default_rng(0)) == 200.0


# ------------------------------------------------------------------------------ properties


def _pool_sizes(cluster: ClusterSnapshot) -> dict[str, int]:
    return {p.name: len(cluster.pool_nodes(p.name)) for p in cluster.pools}


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_decisions_keep_pools_within_bounds_and_respect_timers(data: st.DataObject) -> None:
    now = 3600.0
    cluster = data.draw(snapshots(now=now))
    state = data.draw(states(cluster, now))
    opts = AutoscalerOptions()
    d = decide(cluster, state, now, opts, np.random.default_rng(0))
    pool_of = {n.name: n.pool for n in cluster.nodes}
    for pool in cluster.pools:
        size = _pool_sizes(cluster)[pool.name]
        up = d.scale_up.get(pool.name, 0)
        down = sum(1 for n in (*d.scale_down, *d.remove_unregistered) if pool_of[n] == pool.name)
        assert size + up <= pool.max_nodes
        assert size - down >= pool.min_nodes
    for name in d.scale_down:
        since = state.unneeded_since.get(name, now)
        assert since + opts.scale_down_unneeded_time < now
    if state.last_scale_up_time is not None and state.last_scale_up_time + 600.0 > now:
        assert d.scale_down == ()
    if d.scale_up:
        assert d.scale_down == ()


@settings(max_examples=40, deadline=None)
@given(
    created=st.floats(0.0, 100.0),
    phase=st.floats(0.0, 9.999),
    cpu=st.integers(100, 3000),
    machine=st.sampled_from(["n1-standard-2", "n1-standard-4", "e2-standard-8"]),
)
def test_a_pending_pod_that_fits_a_template_scales_up_within_one_scan_interval(
    created: float, phase: float, cpu: int, machine: str
) -> None:
    pool = NodePool("p", machine_type(machine), 0, 3)
    pod = PodView("w", Resources(cpu, GiB), owner_name="w", created_at=created)
    assume(pool.template().free.cpu_milli >= cpu)
    cluster = ClusterSnapshot((pool,), (), (pod,))
    opts = AutoscalerOptions()
    state = AutoscalerState()
    loop = phase
    while loop < created:
        loop += opts.scan_interval
    while True:
        d = decide(cluster, state, loop, opts)
        if d.scale_up:
            break
        state = d.state
        loop += opts.scan_interval
    assert d.scale_up == {"p": 1}
    # The first loop after the pod is unschedulable and past the 2-s new-pod buffer.
    assert loop <= created + opts.unschedulable_pod_time_buffer + opts.scan_interval


@settings(max_examples=30, deadline=None)
@given(cluster=snapshots(now=1000.0), extra_cpu=st.integers(0, 10_000))
def test_pods_that_fit_no_machine_never_scale_up(cluster: ClusterSnapshot, extra_cpu: int) -> None:
    big = too_big_for_every_machine()
    huge = PodView(
        "huge", Resources(big.cpu_milli + extra_cpu, big.memory_bytes), owner_name="huge"
    )
    cluster = replace(cluster, pending=(huge,))
    d = decide(cluster, AutoscalerState(), 1000.0)
    assert d.scale_up == {}
    messages = [m for who, m in reasons(d, EventReason.NOT_TRIGGER_SCALE_UP) if who == "huge"]
    assert len(messages) == 1
    assert messages[0].startswith("pod didn't trigger scale-up: ")
    assert any(
        why in messages[0]
        for why in ("Insufficient cpu", "max node group size reached", "in backoff after failed")
    )


# -------------------------------------------------------------- a tiny world, many loops


@dataclass
class _World:
    """Applies decisions instantly: nodes are Ready 60 s after the request, drains take a loop."""

    pool: NodePool
    nodes: dict[str, NodeSnapshot] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)
    pending: list[PodView] = field(default_factory=list)
    counter: int = 0

    def snapshot(self) -> ClusterSnapshot:
        return ClusterSnapshot((self.pool,), tuple(self.nodes.values()), tuple(self.pending))

    def tick(self, now: float) -> None:
        for name, node in list(self.nodes.items()):
            if node.phase is NodePhase.PROVISIONING and self.ready_at[name] <= now:
                self.nodes[name] = replace(
                    node, phase=NodePhase.READY, pods=self.pool.template_pods
                )
        still: list[PodView] = []
        for pod in self.pending:
            views = [
                self.pool.view(n.name, n.pods)
                for n in self.nodes.values()
                if n.phase is NodePhase.READY
            ]
            placement = schedule(pod, views)
            if placement.node is None:
                still.append(pod)
            else:
                node = self.nodes[placement.node]
                self.nodes[placement.node] = replace(node, pods=(*node.pods, pod))
        self.pending = still

    def apply(self, d: AutoscalerDecision, now: float) -> None:
        for name, node in list(self.nodes.items()):
            if node.phase is NodePhase.DRAINING:
                del self.nodes[name]
        for _ in range(d.scale_up.get(self.pool.name, 0)):
            self.counter += 1
            name = f"new-{self.counter}"
            self.nodes[name] = NodeSnapshot(name, self.pool.name, NodePhase.PROVISIONING, now)
            self.ready_at[name] = now + 60.0
        for name in d.remove_unregistered:
            del self.nodes[name]
        for name in d.scale_down:
            node = self.nodes[name]
            self.pending.extend(
                replace(p, created_at=now) for p in node.pods if p.owner is OwnerKind.REPLICA_SET
            )
            self.nodes[name] = replace(node, phase=NodePhase.DRAINING, pods=())


@settings(max_examples=15, deadline=None)
@given(
    min_nodes=st.integers(0, 2),
    extra=st.integers(0, 3),
    demand=st.lists(st.integers(0, 6), min_size=3, max_size=8),
)
def test_many_loops_stay_within_bounds(min_nodes: int, extra: int, demand: list[int]) -> None:
    pool = lab_pool(min_nodes, min_nodes + extra + 1)
    world = _World(pool)
    for i in range(max(min_nodes, 1)):
        world.nodes[f"n{i}"] = ready(f"n{i}", extras=(i == 0))
    state = AutoscalerState()
    now = 0.0
    for step, replicas in enumerate(demand):
        # Each phase sets the number of TF Serving replicas, then runs 90 loops (15 min).
        running = [
            p for n in world.nodes.values() for p in n.pods if p.owner_name == "image-classifier"
        ]
        current = running + [p for p in world.pending if p.owner_name == "image-classifier"]
        if replicas > len(current):
            world.pending.extend(
                tf(100 * step + k, created=now) for k in range(replicas - len(current))
            )
        elif replicas < len(current):
            gone = {p.name for p in current[replicas:]}
            world.pending = [p for p in world.pending if p.name not in gone]
            for name, node in world.nodes.items():
                world.nodes[name] = replace(
                    node, pods=tuple(p for p in node.pods if p.name not in gone)
                )
        for _ in range(90):
            world.tick(now)
            d = decide(world.snapshot(), state, now, rng=np.random.default_rng(step))
            size = len([n for n in world.nodes.values()])
            assert size + sum(d.scale_up.values()) <= pool.max_nodes
            draining = sum(1 for n in world.nodes.values() if n.phase is NodePhase.DRAINING)
            assert (
                size - draining - len(d.scale_down) - len(d.remove_unregistered) >= pool.min_nodes
            )
            world.apply(d, now)
            state = d.state
            now += 10.0
