"""The call service and the router on their own, with a fake pool and a fake job runner: what
every front gets from them (resolving, the endpoint and hook checks, validation with the
``accept`` argument chosen, the drain, job submission with its owner and idempotency key).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from marshmallow import fields, validate

from deepaas_like.exceptions import EndpointDisabled, HookNotImplemented, InvalidArguments, ModelNotFound, ShuttingDown
from deepaas_like.kinds import PREDICT, TRAIN
from deepaas_like.model.plugin import ModelDescription
from deepaas_like.serving.calls import Call, CallService, Mode
from deepaas_like.serving.draining import Drain
from deepaas_like.serving.router import Router
from deepaas_like.serving.schemas import ModelSchemas
from deepaas_like.serving.served import ServedModel

OFFERED = ["application/json", "image/png"]


class FakePool:
    """Answers a prediction with the arguments it was given (JSON data)."""

    waiting = 0

    async def run(self, method: str, kwargs: dict[str, Any], **_: Any) -> Any:
        return {"method": method, **kwargs}

    async def kill(self, job_id: str) -> bool:
        return False


class FakeJobs:
    """Records what is submitted."""

    def __init__(self) -> None:
        self.submitted: list[tuple[Any, ...]] = []

    async def submit(self, model: Any, kind: Any, kwargs: Any, uploads: Any, owner: Any, key: Any = None) -> str:
        self.submitted.append((model.name, kind, kwargs, uploads, owner, key))
        return "job"


def model(trains: bool = True) -> ServedModel:
    description = ModelDescription(
        "m",
        {},
        {"n": fields.Int(required=True), "accept": fields.Str(validate=validate.OneOf(OFFERED))},
        {"epochs": fields.Int(load_default=1)} if trains else None,
        None,
    )
    pool: Any = FakePool()
    return ServedModel("m", pool, lambda: pool, schemas=ModelSchemas.build("m", description))


def service(endpoints: bool = True, jobs: Any = None) -> CallService:
    return CallService(Router({"m": model()}), jobs, Drain(), lambda kind: endpoints)


def test_names_resolve_to_the_model_or_are_not_found():
    calls = service()
    assert asyncio.run(calls.resolve("m")).name == "m"
    for name in ("x", "m@1"):  # no versions kept: a version id names no model
        with pytest.raises(ModelNotFound, match="served: m"):
            asyncio.run(calls.resolve(name))


def test_a_synchronous_prediction_is_validated_with_accept_chosen_and_answered():
    calls = service()
    answer = asyncio.run(calls.call(Call("m", PREDICT, {"n": "3"}, accept="image/*")))
    assert answer.prediction is not None
    chosen = {"method": "predict", "n": 3, "accept": "image/png"}  # the Accept header's pick
    assert answer.prediction.document == {"status": "OK", "predictions": chosen}
    named = asyncio.run(calls.call(Call("m", PREDICT, {"n": 3, "accept": "application/json"}, accept="image/png")))
    assert named.prediction is not None and named.prediction.document["predictions"]["accept"] == "application/json"
    default = asyncio.run(calls.call(Call("m", PREDICT, {"n": 3})))
    assert default.prediction is not None and default.prediction.document["predictions"]["accept"] == OFFERED[0]
    with pytest.raises(InvalidArguments) as raised:
        asyncio.run(calls.call(Call("m", PREDICT, {"n": "x"})))
    assert raised.value.messages == {"n": ["Not a valid integer."]}


def test_endpoints_hooks_and_the_drain_are_checked_for_every_front():
    with pytest.raises(EndpointDisabled):
        asyncio.run(service(endpoints=False).call(Call("m", PREDICT, {"n": 1})))
    calls = CallService(Router({"m": model(trains=False)}), None, Drain(), lambda kind: True)
    with pytest.raises(HookNotImplemented, match="does not implement train"):
        asyncio.run(calls.call(Call("m", TRAIN, {}, mode=Mode.ASYNC)))

    async def stopping() -> None:
        calls.drain.expire()  # the shutdown timeout has run out
        await calls.call(Call("m", PREDICT, {"n": 1}))

    with pytest.raises(ShuttingDown):
        asyncio.run(stopping())


def test_jobs_are_submitted_with_their_owner_and_idempotency_key():
    jobs = FakeJobs()
    calls = service(jobs=jobs)
    call = Call("m", PREDICT, {"n": 2}, None, "image/png", "owner-hash", "key-1", Mode.ASYNC)
    assert asyncio.run(calls.call(call)).job == "job"
    # A job's call answers with the job: the client's Accept does not pick its result.
    assert jobs.submitted == [("m", PREDICT, {"n": 2, "accept": "application/json"}, None, "owner-hash", "key-1")]
    asyncio.run(calls.call(Call("m", TRAIN, {}, mode=Mode.ASYNC)))
    assert jobs.submitted[-1] == ("m", TRAIN, {"epochs": 1}, None, None, None)
