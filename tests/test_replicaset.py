from hypothesis import given
from hypothesis import strategies as st

from sim.replicaset import PodRank, deletion_order


def pod(name: str, **kw: object) -> PodRank:
    base: dict[str, object] = dict(
        node="n1", phase="Running", ready=True, ready_since=0.0, created=0.0
    )
    base.update(kw)
    return PodRank(name=name, **base)  # type: ignore[arg-type]


def test_upstream_rank_order() -> None:
    pods = [
        pod("old-ready", created=0.0, ready_since=10.0),
        pod("new-ready", created=100.0, ready_since=120.0),
        pod("not-ready", ready=False, ready_since=None, created=50.0),
        pod("pending", phase="Pending", ready=False, ready_since=None),
        pod("unassigned", node=None, phase="Pending", ready=False, ready_since=None),
    ]
    assert deletion_order(pods) == ["unassigned", "pending", "not-ready", "new-ready", "old-ready"]


def test_crowded_node_goes_first() -> None:
    pods = [
        pod("alone", node="a"),
        pod("x", node="b", created=1.0),
        pod("y", node="b", created=2.0),
    ]
    assert deletion_order(pods)[0] in {"x", "y"}
    assert deletion_order(pods)[-1] == "alone"


ranks = st.builds(
    PodRank,
    name=st.uuids().map(str),
    node=st.sampled_from([None, "a", "b"]),
    phase=st.sampled_from(["Pending", "Running"]),
    ready=st.booleans(),
    ready_since=st.floats(0, 1000),
    created=st.floats(0, 1000),
)


@given(st.lists(ranks, max_size=12, unique_by=lambda p: p.name))
def test_an_unscheduled_pod_is_never_kept_over_a_scheduled_one(pods: list[PodRank]) -> None:
    order = deletion_order(pods)
    assert sorted(order) == sorted(p.name for p in pods)
    by_name = {p.name: p for p in pods}
    seen_assigned = False
    for name in order:
        if by_name[name].node is not None:
            seen_assigned = True
        else:
            assert not seen_assigned, "an unassigned pod must be deleted before any assigned one"
