"""The one protocol both executors speak (issue 27, item 7): every message survives its wire
form through a real pipe's pickling, and what is not a message is refused.
"""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from deepaas_like.model.plugin import ModelDescription
from deepaas_like.workers import protocol
from deepaas_like.workers.base import Placement, WorkerOptions
from deepaas_like.workers.protocol import (
    BatchResult,
    Broken,
    Call,
    Check,
    Checked,
    Connected,
    Died,
    Error,
    Failed,
    Invalid,
    Kill,
    Leave,
    NotJSON,
    Numbered,
    Place,
    Placed,
    Progress,
    Ready,
    ReplicaCall,
    Result,
    TooLarge,
    Unanswered,
    Unreachable,
)

CALL = Call("predict", {"text": "a"}, "req-1", None)
OUTCOMES = [
    Result({"labels": [1, 2]}),
    Invalid({"text": ["Missing data for required field."]}),
    Error("ValueError", "bad", "Traceback ...", 400),
    NotJSON("a set is not JSON"),
    TooLarge("over 10 bytes"),
    BatchResult([Result(b"\x00"), Error("KeyError", "k")]),
]
MESSAGES = [
    CALL,
    Leave(),
    Ready(ModelDescription("demo", {"name": "demo"}, None, None, None)),
    Failed("ImportError: no module", "Traceback ..."),
    Progress(0.5, "half", {"loss": 0.1}, 3),
    *OUTCOMES,
    Connected("1 node(s), 2 CPU(s), 0 GPU(s)"),
    Unreachable("ConnectionError: nothing answers at 10.0.0.1:6379"),
    Broken("the Ray driver cannot start: ModuleNotFoundError: No module named 'numpy'"),
    Place("demo/predict/1", "demo", "deepaas.v2.model", {"num_cpus": 1.0}, WorkerOptions(threads=1)),
    Placed(b"pickled Ready", Placement("abcdef12", ("0",))),
    ReplicaCall("demo/predict/1", CALL, with_progress=True),
    Unanswered("its replica (Ray actor) died", replica_died=True),
    Check({"num_gpus": 2.0}),
    Checked("no node of the Ray cluster has 2 GPU"),
    Checked(None),
    Kill("demo/predict/1"),
    Died("demo/predict/1", "its replica (Ray actor) died"),
    Numbered(7, ReplicaCall("demo/predict/2", CALL)),
    *[Numbered(8, outcome) for outcome in OUTCOMES],
    Numbered(9, Progress(None, None)),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda message: type(message).__name__)
def test_every_message_comes_back_as_it_was_sent(message):
    wire = protocol.encode(message)
    assert isinstance(wire, tuple) and isinstance(wire[0], str)
    assert protocol.decode(pickle.loads(pickle.dumps(wire, protocol=5))) == message


def test_every_message_class_is_tried_above():
    classes = {value for value in vars(protocol).values() if dataclasses.is_dataclass(value)}
    classes -= {ModelDescription, Placement, WorkerOptions}  # fields of messages, not messages
    assert classes == {type(message) for message in MESSAGES}


def test_what_is_not_a_message_is_refused():
    with pytest.raises(TypeError, match="not a protocol message"):
        protocol.encode(("call", "predict", {}, "-", None))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a protocol message: 'hello'"):
        protocol.decode(("hello", "a tuple of the driver's old protocol"))
