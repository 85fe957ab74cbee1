from __future__ import annotations

import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.cuts import find_cuts, select_cuts, why_not_a_cut
from models.graph import GraphIndex
from models.onnx_io import load_model
from neukonfig.errors import CutNotFoundError, InvalidCutError, UnsupportedModelError
from neukonfig.manifest import CutKind
from tests.graphs import BRANCHY_CUTS, branchy_model, random_dag_model, two_input_model
from tests.oracle import brute_force_cuts


def cuts_of(model: onnx.ModelProto):
    return find_cuts(GraphIndex(onnx.shape_inference.infer_shapes(model)))


def test_branchy_graph_has_exactly_the_known_cuts() -> None:
    cuts = cuts_of(branchy_model())
    assert [cut.tensor for cut in cuts] == BRANCHY_CUTS
    assert [cut.index for cut in cuts] == list(range(len(BRANCHY_CUTS)))
    assert cuts[0].kind is CutKind.ALL_CLOUD
    assert cuts[-1].kind is CutKind.ALL_EDGE
    assert cuts[-1].bytes == 0
    assert all(cut.kind is CutKind.SPLIT for cut in cuts[1:-1])


def test_cut_records_shape_dtype_and_batch1_bytes() -> None:
    by_tensor = {cut.tensor: cut for cut in cuts_of(branchy_model())}
    assert by_tensor["x"].shape == ("batch", 4)
    assert by_tensor["g"].dtype == "float32"
    assert by_tensor["g"].bytes == 16


@pytest.mark.parametrize(
    ("tensor", "crossing"),
    [("b1", "'a'"), ("e", "'d'"), ("l1", "'h'"), ("s", "'g'"), ("batch", "'g'")],
)
def test_invalid_cut_names_the_edge_that_crosses(tensor: str, crossing: str) -> None:
    reason = why_not_a_cut(GraphIndex(branchy_model()), tensor)
    assert crossing in reason


def test_constant_and_dead_tensors_are_not_cuts() -> None:
    index = GraphIndex(branchy_model())
    assert "carries no activation" in why_not_a_cut(index, "k")
    assert "dead" not in {cut.tensor for cut in find_cuts(index)}
    assert all(node.name != "dead" for node in index.nodes)


def test_several_graph_inputs_are_refused_by_name() -> None:
    with pytest.raises(UnsupportedModelError, match="2 graph inputs"):
        cuts_of(two_input_model())


def test_select_cuts_by_index_and_tensor_name() -> None:
    index = GraphIndex(branchy_model())
    cuts = find_cuts(index)
    chosen = select_cuts(cuts, index, "5, a,0")
    assert [cut.index for cut in chosen] == [0, 2, 5]
    assert select_cuts(cuts, index, "all") == cuts


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("99", CutNotFoundError, "cut index 99 does not exist"),
        ("-1", CutNotFoundError, "does not exist"),
        ("nope", CutNotFoundError, "'nope' does not exist"),
        ("e", InvalidCutError, "skip connection or parallel branch"),
        ("1,,2", CutNotFoundError, "empty entry"),
    ],
)
def test_select_cuts_rejects_bad_entries(spec: str, error: type, message: str) -> None:
    index = GraphIndex(branchy_model())
    with pytest.raises(error, match=message):
        select_cuts(find_cuts(index), index, spec)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 3)),
        min_size=1,
        max_size=25,
    )
)
def test_sweep_agrees_with_brute_force_on_random_dags(choices) -> None:
    model = random_dag_model(choices)
    internal = [cut.tensor for cut in cuts_of(model)[1:-1]]
    assert internal == brute_force_cuts(model)


def test_sweep_agrees_with_brute_force_on_zoo_models(zoo_file) -> None:
    for name in ("tiny", "mobilenetv2"):
        model = load_model(zoo_file(name))
        internal = [cut.tensor for cut in find_cuts(GraphIndex(model.proto))[1:-1]]
        assert internal == brute_force_cuts(onnx.load(str(zoo_file(name))))
        assert len(internal) > 10
