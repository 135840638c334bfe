import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.units import cpu_millis, format_duration, memory_bytes, parse_duration


@pytest.mark.parametrize(
    ("text", "millis"), [("3", 3000), ("500m", 500), ("0.5", 500), ("1.25", 1250), (2, 2000)]
)
def test_cpu(text: str, millis: int) -> None:
    assert cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("text", "size"), [("4Gi", 4 * 2**30), ("512M", 512_000_000), ("1Ki", 1024), ("100", 100)]
)
def test_memory(text: str, size: int) -> None:
    assert memory_bytes(text) == size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25), ("30", 30)],
)
def test_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5x", "m5", "-3s", "1h-5m", "abc", True])
def test_bad_duration_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["3 cores", "4GB", "", "1..2"])
def test_bad_quantity_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        cpu_millis(bad)


@given(st.integers(min_value=0, max_value=10**7))
def test_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
