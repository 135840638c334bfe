"""TF Serving's command line as scalelab reads it: Kubernetes' $(VAR) expansion, TF's flag
parsing (last value wins, ``--`` ends the flags), the BatchingParameters text proto."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.tfserving_flags import batching_text, expand, parse_batching, read_flags

ENV = {"VAR_A": "A", "VAR_B": "B", "DOLLAR": "$", "REF": "$(VAR_A)"}


@pytest.mark.parametrize(
    ("given", "expanded"),
    [
        # Cases from kubernetes third_party/forked/golang/expansion/expand_test.go.
        ("$(VAR_A)", "A"),
        ("___$(VAR_A)___", "___A___"),
        ("$(VAR_A)$(VAR_B)", "AB"),
        ("$$(VAR_A)", "$(VAR_A)"),
        ("$$$(VAR_A)", "$A"),
        ("$$$$$$(VAR_A)", "$$$(VAR_A)"),
        ("$$$$$$$(VAR_A)", "$$$A"),
        ("$$$$$$$(GOOD_ODDS)", "$$$$(GOOD_ODDS)"),
        ("$VAR_A)", "$VAR_A)"),
        ("${VAR_A}", "${VAR_A}"),
        ("$(VAR_DNE)", "$(VAR_DNE)"),
        ("$(VAR_A", "$(VAR_A"),
        ("$VAR_A", "$VAR_A"),
        ("foo$", "foo$"),
        ("$$", "$"),
        ("$(REF)", "$(VAR_A)"),  # a value is not expanded again
        ("$(DOLLAR)(VAR_A)", "$(VAR_A)"),
    ],
)
def test_expansion_is_kubernetes(given: str, expanded: str) -> None:
    assert expand(given, ENV)[0] == expanded


TEXT = st.text(alphabet="$()AB_ -=x", max_size=20).map(
    lambda t: t.replace("A", "$(VAR_A)").replace("B", "$(VAR_B)")
)


@given(TEXT)
def test_an_item_kept_for_kubernetes_expands_there_to_the_same(text: str) -> None:
    """Partly expanded here (keep_escapes), then by the kubelet with what is left undefined:
    the same as the kubelet expanding the original with everything."""
    kept, unresolved = expand(text, ENV, keep_escapes=True)
    assert expand(kept, {})[0] == expand(text, ENV)[0]
    assert unresolved == expand(text, ENV)[1]


def test_the_last_value_wins_and_double_dash_ends_the_flags() -> None:
    read = read_flags(
        None,
        ["--rest_api_num_threads=4", "--port=8500", "--rest_api_num_threads=8", "--", "--x=1"],
        "here",
    )
    assert read.values == {"rest_api_num_threads": "8"}
    assert read.where["rest_api_num_threads"] == "args[2] '--rest_api_num_threads=8'"
    assert read.args == ["--port=8500", "--", "--x=1"]
    after = read_flags(["tensorflow_model_server", "--", "--enable_batching"], [], "here")
    assert after.values == {} and after.command == [
        "tensorflow_model_server",
        "--",
        "--enable_batching",
    ]


def test_batching_text_reads_back() -> None:
    fields = {"max_batch_size": 4, "batch_timeout_micros": 0, "num_batch_threads": None}
    assert parse_batching(batching_text(fields), "f") == {
        "max_batch_size": 4,
        "batch_timeout_micros": 0,
    }
    spaced = "# comment\nmax_batch_size: {\n  value: 16\n}\nmax_enqueued_batches { value: 2 }  "
    assert parse_batching(spaced, "f") == {"max_batch_size": 16, "max_enqueued_batches": 2}
    with pytest.raises(ValueError, match="'pad_variable_length_inputs' is not simulated"):
        parse_batching("pad_variable_length_inputs: true", "f")
    with pytest.raises(ValueError, match="write max_batch_size as"):
        parse_batching("max_batch_size: 4", "f")
