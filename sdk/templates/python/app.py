"""{{name}}: a botbox plugin. It greets people who say `!hello` in chat,
answering in their conversation, and counts greetings in kv.

Try it: `./build.sh`, then
`botbox call {{name}}.wasm --event '{"name": "hello", "payload": "Ada"}'`.

`wit_world/` (with `componentize_py_types.py` and the other generated
helpers beside it) is the world's bindings package, which `./build.sh`
regenerates from `wit/` (`componentize-py bindings`), so editors complete
the imports and `mypy` (see mypy.ini) checks the calls. Records are
dataclasses with snake_case fields, variants are one class per case
(`types.Event_ChatMessage(value)`), options are a value or None. An import that returns `result` raises `componentize_py_types.Err`
with the error as `.value`; `handle` fails the event by raising `Err(text)`.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import broadcast, kv, settings, types


def greeting(name: str, count: int) -> str:
    template = settings.get("greeting") or "Hello, {name}!"
    return f"{template.replace('{name}', name)} (greeting #{count})"


def count_greeting() -> int:
    """Counts one more greeting in kv and returns the new total."""
    stored = kv.get("greeted")
    count = (int(stored.decode()) if stored else 0) + 1
    kv.set("greeted", str(count).encode())
    return count


def greet(name: str, channel: str, reply_to: str | None) -> None:
    broadcast.send_broadcast(
        types.Message(
            channel=channel,
            content=types.Content_Text(greeting(name, count_greeting())),
            sender=settings.get("sender"),
            extra=None,
            idempotency_key=None,
            reply_to=reply_to,
            options=None,
        )
    )


class Handler(exports.Handler):
    def describe(self) -> types.Manifest:
        return types.Manifest(
            name="{{name}}",
            version="0.1.0",
            channels=["lobby"],
            events=[types.EventKind.CHAT_MESSAGE, types.EventKind.CUSTOM],
            schedules=[],
        )

    def handle(self, event: types.Event) -> None:
        try:
            if isinstance(event, types.Event_ChatMessage):
                msg = event.value
                if msg.text.strip() == "!hello":
                    greet(msg.sender_name or msg.sender_id, msg.channel, msg.conversation)
            elif isinstance(event, types.Event_Custom):
                # `botbox call … --event '{"name": "hello", "payload": "Ada"}'`
                if event.value.name != "hello":
                    raise Err(f"unknown event `{event.value.name}`; this bot knows `hello`")
                greet(event.value.payload.strip() or "everyone", "lobby", None)
        except Err as err:
            # Our own errors are text; a failed host call carries its WIT error.
            raise Err(err.value if isinstance(err.value, str) else repr(err.value)) from None
