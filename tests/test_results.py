"""The rule every prediction follows, in a worker or the CLI: binary, or JSON data that
any JSON parser reads, of at most ``--max-result-size`` bytes.
"""

import pytest

from deepaas_like.exceptions import PredictionNotJSON, ResultTooLarge
from deepaas_like.results import FileResult, check_prediction, not_json


def _nested(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


class Widget:
    pass


@pytest.mark.parametrize(
    ("prediction", "message"),
    [
        ({"scores": [0.5, float("nan")]}, '["scores"][1] is nan (a float; JSON has no NaN or Infinity)'),
        ([float("-inf")], "[0] is -inf (a float; JSON has no NaN or Infinity)"),
        ({"labels": {1, 2}}, '["labels"] is of type set, which JSON cannot represent'),
        ({"a": {"b": Widget()}}, '["a"]["b"] is of type tests.test_results.Widget, which JSON cannot represent'),
        ({"image": b"\x89PNG"}, '["image"] is of type bytes, which JSON cannot represent'),
        ({(1, 2): "pair"}, "the prediction itself has a key of type tuple (JSON keys are strings)"),
        (_nested(100_000), "it is nested too deeply: a list more than 400 lists or objects deep"),
    ],
)
def test_what_is_not_json_is_named(prediction, message):
    with pytest.raises(PredictionNotJSON) as caught:
        check_prediction(prediction, "demo")
    assert caught.value.message == f"the prediction of model 'demo' is not JSON: {message}"
    assert caught.value.status == 500


def test_a_cycle_is_too_deep():
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(PredictionNotJSON, match="nested too deeply"):
        check_prediction({"cycle": cycle}, "demo")


@pytest.mark.parametrize(
    "prediction",
    [{"a": [1, 2.5, None, True, "x"]}, (1, 2), {1: "keys that json.dumps turns into strings"}, _nested(300), "text", 3],
)
def test_json_data_passes(prediction):
    check_prediction(prediction, "demo")


def test_max_size_counts_json_bytes_and_files(tmp_path):
    check_prediction({"a": "x" * 10}, "demo", max_size=len('{"a": "xxxxxxxxxx"}'))
    with pytest.raises(ResultTooLarge, match=r"is 20 bytes, more than this server sends \(19 bytes"):
        check_prediction({"a": "x" * 11}, "demo", max_size=19)
    path = tmp_path / "result.bin"
    path.write_bytes(b"0" * 100)
    with pytest.raises(ResultTooLarge) as caught:
        check_prediction(FileResult(str(path)), "demo", max_size=99)
    assert caught.value.status == 507
    check_prediction(b"0" * 100, "demo", max_size=100)


def test_nesting_deeper_than_a_worker_can_pickle_is_named():
    # json.dumps manages this, pickle (twice the recursion per level) would not.
    assert "nested too deeply: a list more than 400" in not_json(_nested(600), "demo")
    assert not_json(_nested(300), "demo") is None


def test_a_nan_key_and_a_huge_integer_are_named():
    with pytest.raises(PredictionNotJSON, match=r"the prediction itself has the key nan \(a float"):
        check_prediction({float("nan"): 1}, "demo")
    with pytest.raises(PredictionNotJSON, match="is not JSON: ValueError: Exceeds the limit"):
        check_prediction([10**5000], "demo")
