"""Error answers become exceptions a caller catches by meaning, with the server's message
and a 422's field messages (httpx.MockTransport answers as the server answers)."""

from __future__ import annotations

import httpx
import pytest

from deepaas_like.client import (
    ArgumentsError,
    AuthenticationError,
    Client,
    ClientError,
    NotFoundError,
    ServerError,
    TransportError,
)


def client_answering(status: int, body: object = None, text: str | None = None) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text)
        return httpx.Response(status, json=body)

    return Client("http://server", retries=0, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (500, ServerError),
        (503, ServerError),
        (402, ClientError),
        (409, ClientError),
    ],
)
def test_status_picks_the_exception_and_the_message_is_the_servers(status: int, kind: type) -> None:
    with pytest.raises(kind) as raised:
        client_answering(status, {"message": "what went wrong"}).models()
    assert type(raised.value) is kind
    assert (raised.value.status, raised.value.message, raised.value.fields) == (status, "what went wrong", None)
    assert str(raised.value) == f"{status}: what went wrong"


def test_a_422_carries_each_fields_messages() -> None:
    body = {"size": ["Must be at least 8."], "tags": {"1": ["Not a valid string."]}}
    with pytest.raises(ArgumentsError) as raised:
        client_answering(422, body).predict("demo", size=2)
    assert raised.value.fields == {"size": ["Must be at least 8."], "tags": ["1: Not a valid string."]}
    assert raised.value.message == "invalid arguments: size: Must be at least 8.; tags: 1: Not a valid string."


def test_an_answer_that_is_not_json_gives_its_text() -> None:
    with pytest.raises(ServerError, match="502: Bad Gateway from the proxy"):
        client_answering(502, text="Bad Gateway from the proxy\n").models()


def test_no_server_is_a_transport_error_naming_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = Client("http://server:1", retries=1, transport=httpx.MockTransport(refuse))
    with pytest.raises(
        TransportError, match=r"GET http://server:1/v2/models/: ConnectError: connection refused"
    ) as raised:
        client.models()
    assert raised.value.status == 0 and isinstance(raised.value, ClientError)


def test_a_url_that_is_not_a_servers_says_so() -> None:
    client = client_answering(200, text="<html>a web page</html>")
    with pytest.raises(ClientError, match=r"http://server/v2/models/ answered text/plain; charset=utf-8, not JSON"):
        client.models()
