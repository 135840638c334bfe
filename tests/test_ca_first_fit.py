"""The CA's simulations that resume first fit per pod class place every pod exactly where a
plain first fit from the first node would (filter-out-schedulable, binpacking, scale-down)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cluster.autoscaler import filter_out_schedulable
from sim.cluster.ca.drainability import default_rules
from sim.cluster.ca.estimator import estimate
from sim.cluster.ca.model import NodePool
from sim.cluster.ca.options import AutoscalerOptions
from sim.cluster.ca.scaledown import Candidate, find_unneeded
from sim.cluster.catalog import Resources
from sim.cluster.scheduler import NodeView, PodView, first_fit

GiB = 2**30
POOL = NodePool.of("p", "n1-standard-4", 0, 50)
CLASSES = (
    Resources(100, GiB // 8),
    Resources(500, GiB),
    Resources(1000, 2 * GiB),
    Resources(3000, 4 * GiB),
)

pod_lists = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["web", "batch"])), max_size=40)
loads = st.lists(st.integers(0, 3900), min_size=0, max_size=12)


def _pods(spec: list[tuple[int, str]], prefix: str = "p") -> list[PodView]:
    return [
        PodView(f"{prefix}{i}", CLASSES[c], owner_name=owner) for i, (c, owner) in enumerate(spec)
    ]


def _nodes(used: list[int], prefix: str = "n") -> dict[str, NodeView]:
    template = POOL.template()
    return {
        f"{prefix}{i:02d}": NodeView(
            f"{prefix}{i:02d}",
            template.allocatable,
            template.requested + Resources(u, 0),
            pool="p",
            pod_count=template.pod_count,
            max_pods=template.max_pods,
        )
        for i, u in enumerate(used)
    }


@settings(max_examples=100, deadline=None)
@given(pod_lists, loads, st.integers(0, 3))
def test_filter_out_schedulable_is_plain_first_fit(
    spec: list[tuple[int, str]], used: list[int], upcoming: int
) -> None:
    pods = _pods(spec)
    views = _nodes(used)
    fake = {f"up{i}": POOL.template(f"up{i}") for i in range(upcoming)}
    # Reference: the plain loop, every pod from the first node.
    ref_views, ref_fake = dict(views), dict(fake)
    ref_injected: dict[str, list[PodView]] = defaultdict(list)
    ref_help = []
    order = [*ref_views, *ref_fake]
    for pod in pods:
        targets = [ref_views[k] if k in ref_views else ref_fake[k] for k in order]
        index = first_fit(pod, targets)
        if index is None:
            ref_help.append(pod)
        elif order[index] in ref_views:
            ref_views[order[index]] = targets[index].with_pod(pod)
            ref_injected[order[index]].append(pod)
        else:
            ref_fake[order[index]] = targets[index].with_pod(pod)
    injected: dict[str, list[PodView]] = defaultdict(list)
    got = filter_out_schedulable(pods, views, fake, injected)
    assert (got, views, fake, dict(injected)) == (ref_help, ref_views, ref_fake, dict(ref_injected))


def _score(pod: PodView, template: NodeView) -> float:
    return (
        pod.requests.cpu_milli / template.allocatable.cpu_milli
        + pod.requests.memory_bytes / template.allocatable.memory_bytes
    )


@settings(max_examples=100, deadline=None)
@given(pod_lists, st.integers(1, 30))
def test_estimate_is_plain_first_fit(spec: list[tuple[int, str]], max_nodes: int) -> None:
    pods = _pods(spec)
    groups: dict[tuple[Resources, str], list[PodView]] = {}
    for pod in pods:
        groups.setdefault((pod.requests, pod.owner_name), []).append(pod)
    template = POOL.template()
    got = estimate(list(groups.values()), template, max_nodes)
    # Reference: the pods of the groups, largest first, each tried on every node opened.
    nodes: list[NodeView] = []
    scheduled: list[PodView] = []
    used: list[bool] = []
    can_add = True
    for group in sorted(groups.values(), key=lambda g: -_score(g[0], template)):
        rest = list(group)
        while rest:
            index = first_fit(rest[0], nodes)
            if index is None:
                break
            nodes[index] = nodes[index].with_pod(rest[0])
            used[index] = True
            scheduled.append(rest.pop(0))
        if not can_add:
            continue
        for pod in rest:
            if nodes and first_fit(pod, nodes[-1:]) == 0:
                nodes[-1] = nodes[-1].with_pod(pod)
                used[-1] = True
                scheduled.append(pod)
                continue
            if nodes and not used[-1]:
                break
            if len(nodes) >= max_nodes:
                can_add = False
                break
            nodes.append(template)
            used.append(False)
            if first_fit(pod, nodes[-1:]) is None:
                break
            nodes[-1] = nodes[-1].with_pod(pod)
            used[-1] = True
            scheduled.append(pod)
    assert (got.node_count, got.pods) == (sum(used), tuple(scheduled))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), max_size=6), max_size=10), loads)
def test_scale_down_simulation_is_plain_first_fit(
    candidate_pods: list[list[int]], used: list[int]
) -> None:
    """Candidates (lightly loaded nodes) and other destinations: the removable set, the pods
    to move and the unremovable reasons match a trial copy with first fit from node one."""
    options = AutoscalerOptions()
    candidates = []
    dest = _nodes(used, "d")
    for i, classes in enumerate(candidate_pods):
        pods = tuple(
            PodView(f"c{i}-{j}", CLASSES[c], owner_name="web") for j, c in enumerate(classes)
        )
        name = f"c{i:02d}"
        candidates.append(Candidate(name, POOL, POOL.template_pods + pods))
        dest[name] = POOL.view(name, POOL.template_pods + pods)
    got = find_unneeded(candidates, dest, {}, 0.0, options, default_rules(options))
    # Reference: per candidate, a copy of the destinations without it, first fit by name.
    ref_removable = []
    ref_unremovable = {}
    current = dict(dest)
    for cand in candidates:
        if got.utilization[cand.name].value >= options.timings.utilization_threshold:
            ref_unremovable[cand.name] = "NotUnderutilized"
            continue
        trial = {k: v for k, v in current.items() if k != cand.name}
        order = sorted(trial)
        movable = [p for p in cand.pods if p.owner_name == "web"]
        ok = True
        for pod in movable:
            views = [trial[k] for k in order]
            index = first_fit(pod, views)
            if index is None:
                ok = False
                break
            trial[order[index]] = views[index].with_pod(pod)
        if ok:
            current = trial
            ref_removable.append((cand.name, tuple(movable)))
        else:
            ref_unremovable[cand.name] = "NoPlaceToMovePods"
    assert [(r.name, r.pods_to_move) for r in got.removable] == ref_removable
    assert {k: str(v) for k, v in got.unremovable.items()} == ref_unremovable


def test_a_candidate_that_stays_still_takes_pods() -> None:
    """c00 cannot go (one pod fits nowhere), so it stays a destination: c01's pod, of a class
    that skipped c00 while c00 was the one leaving, goes there."""
    options = AutoscalerOptions()
    small = Resources(100, GiB // 8)
    stuck = PodView("stuck", small, owner_name="web", node_selector={"zone": "nowhere"})
    c00 = (*POOL.template_pods, PodView("a", small, owner_name="web"), stuck)
    c01 = (*POOL.template_pods, PodView("b", small, owner_name="web"))
    candidates = [Candidate("c00", POOL, c00), Candidate("c01", POOL, c01)]
    dest = {"c00": POOL.view("c00", c00), "c01": POOL.view("c01", c01)}
    got = find_unneeded(candidates, dest, {}, 0.0, options, default_rules(options))
    assert [r.name for r in got.removable] == ["c01"]
    assert str(got.unremovable["c00"]) == "NoPlaceToMovePods"
