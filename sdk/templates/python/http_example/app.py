"""An outbound-HTTP bot in Python: on the custom event `fetch` it GETs the
URL in the payload and sends `status N: BODY` (or `error ...`) to lobby.

It targets `wit/world.wit`: the botbox:bot@0.2.0 contract plus
`wasi:http/outgoing-handler`. Build it from this folder with

    componentize-py --wit-path wit --world bot componentize app -o fetcher.wasm

and grant its hosts in the operator's config:

    [plugins.fetcher]
    http = ["api.example.org:443"]

A request to a host the operator did not grant is refused by the host
before any connection: `outgoing_handler.handle` (or the response future)
fails with `ErrorCode_HttpRequestDenied`, which `fetch` below turns into
an `HttpFailure` the bot can read and report.

This uses componentize-py's generated `wasi:http` bindings directly and
blocks on the response's pollable, the synchronous form of what
componentize-py's own `examples/http` does with `poll_loop.send` and
`poll_loop.Stream` (github.com/bytecodealliance/componentize-py,
examples/http/app.py). `poll_loop.py` itself expects `wasi:http/types` as
`wit_world.imports.types`, which here is botbox's `types`, so it is not
used; a bot's `handle` is synchronous anyway.
"""

from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.exports import handler
from wit_world.imports import botbox_bot_types as types
from wit_world.imports import broadcast, outgoing_handler
from wit_world.imports import wasi_http_types as http
from wit_world.imports.streams import StreamError_Closed

# The hosts this bot asks for in describe(); the operator grants some of them.
# The test that builds this file replaces the list (it serves on loopback).
ASKS: list[str] = ["api.example.org:443"]
# At most this much of a body is kept: the reply is a chat message.
MAX_BODY_BYTES = 1024
READ_CHUNK = 16 * 1024


class HttpFailure(Exception):
    """A request the host refused or that failed on the way."""


def fetch(url: str) -> tuple[int, bytes]:
    """GETs `url`; its status and the first MAX_BODY_BYTES of its body."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HttpFailure(f"not an http(s) URL: {url[:200]!r}")
    request = http.OutgoingRequest(http.Fields())
    request.set_method(http.Method_Get())
    request.set_scheme(http.Scheme_Https() if parts.scheme == "https" else http.Scheme_Http())
    request.set_authority(parts.netloc)
    # wasi:http builds no URI without a path.
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    try:
        # The host checks the grant here (or when the future resolves):
        # an ungranted host is `Err(ErrorCode_HttpRequestDenied)`.
        future = outgoing_handler.handle(request, None)
        while (answer := future.get()) is None:
            future.subscribe().block()
    except Err as err:
        raise HttpFailure(type(err.value).__name__) from None
    if not isinstance(answer, Ok):
        raise HttpFailure("the response was already taken")
    if not isinstance(answer.value, Ok):
        # err(error-code): refused by the host or failed on the wire.
        raise HttpFailure(type(answer.value.value).__name__)
    body = b""
    # `with` drops each resource when done, children before their parents
    # (the stream before its body, the body before its response).
    with answer.value.value as response:
        status = response.status()
        with response.consume() as incoming, incoming.stream() as stream:
            try:
                while len(body) < MAX_BODY_BYTES:
                    body += stream.blocking_read(READ_CHUNK)
            except Err as err:
                if not isinstance(err.value, StreamError_Closed):
                    raise HttpFailure("the body was cut: " + type(err.value).__name__) from None
    return status, body[:MAX_BODY_BYTES]


def say(text: str) -> None:
    broadcast.send_broadcast(
        types.Message(
            channel="lobby",
            content=types.Content_Text(text),
            sender=None,
            extra=None,
            idempotency_key=None,
            reply_to=None,
            options=None,
        )
    )


class Handler(exports.Handler):
    def describe(self) -> handler.Manifest:
        return handler.Manifest(
            name="fetcher",
            version="0.2.0",
            channels=["lobby"],
            events=[types.EventKind.CUSTOM],
            schedules=[],
            http=ASKS,
        )

    def handle(self, event: types.Event) -> None:
        if not isinstance(event, types.Event_Custom) or event.value.name != "fetch":
            return
        try:
            status, body = fetch(event.value.payload.strip())
            say(f"status {status}: {body.decode('utf-8', 'replace')}")
        except HttpFailure as failure:
            say(f"error {failure}")
