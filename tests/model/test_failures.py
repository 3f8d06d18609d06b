"""A hook's error as the client sees it: aiohttp ``HTTPException`` wrappers of the ai4os
module template unwrapped to the real exception, with the status the plugin chose.
"""

import pytest
from aiohttp import web

from deepaas_like.exceptions import PluginLoadError
from deepaas_like.model.failures import failure_of
from deepaas_like.workers.execution import start_plugin


def raised(build):
    """What ``build(original)`` raises while handling ``ValueError("empty image")``."""
    try:
        try:
            raise ValueError("empty image")
        except ValueError as original:
            raise build(original) from original
    except Exception as error:  # noqa: BLE001 - the test looks at it
        return error
    raise AssertionError("nothing raised")


def test_a_plain_exception_is_itself_with_status_500():
    failure, cause = failure_of(error := raised(lambda original: KeyError("label")))
    assert (failure.error_type, failure.message, failure.status, cause) == ("KeyError", "'label'", 500, error)
    assert "KeyError" in failure.traceback


def test_building_an_http_exception_around_an_exception_fails_inside_the_plugin_and_is_unwrapped():
    error = raised(lambda original: web.HTTPBadRequest(reason=original))
    assert isinstance(error, TypeError), "aiohttp refuses an exception as reason (3.10.6 and later)"
    failure, cause = failure_of(error)
    assert (failure.error_type, failure.message, failure.status) == ("ValueError", "empty image", 400)
    assert isinstance(cause, ValueError) and "not iterable" not in failure.traceback


def test_an_http_exception_built_around_an_exception_is_unwrapped():
    error = web.HTTPServiceUnavailable()  # as aiohttp before 3.10.6 built one with reason=<exception>
    error._reason = original = ValueError("empty image")
    failure, cause = failure_of(error)
    assert (failure.error_type, failure.message, failure.status, cause) == ("ValueError", "empty image", 503, original)


def test_the_base_http_exception_and_a_text_reason():
    failure = failure_of(raised(lambda original: web.HTTPException(reason=original)))[0]
    assert (failure.error_type, failure.message, failure.status) == ("ValueError", "empty image", 500)
    failure = failure_of(raised(lambda original: web.HTTPNotFound(reason=f"no image: {original}")))[0]
    assert (failure.error_type, failure.message, failure.status) == ("HTTPNotFound", "no image: empty image", 404)
    # A reason aiohttp refuses (a newline) given outside any handled exception.
    try:
        web.HTTPBadRequest(reason="two\nlines")
    except ValueError as error:
        failure = failure_of(error)[0]
    assert (failure.error_type, failure.message, failure.status) == ("HTTPBadRequest", "two\nlines", 400)


def test_a_warm_raising_through_catch_error_fails_the_start_with_the_real_error(plugin_path, monkeypatch):
    monkeypatch.setenv("CATCH_ERROR_WARM", "fail")
    with pytest.raises(PluginLoadError, match=r"^warm\(\) failed: FileNotFoundError: no weights in /models$"):
        start_plugin("catch_error", "deepaas.v2.model")
