"""faq: answers chat questions by keyword matching against a FAQ table
from its settings, in the conversation they were asked, and counts the
answers in kv.

Built with componentize-py against wit/bot.wit (world `bot`):
`componentize-py -d wit -w bot componentize app -o faq.wasm`. The logic
lives in `faq.py`; this module is the glue to the botbox interfaces.
See plugins/README.md for events, settings and kv keys.
"""

from __future__ import annotations

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import broadcast, kv, log, settings, types

from faq import Entry, FaqError, best_match, is_question, parse_bool, parse_table

VERSION = "0.1.0"
CHANNEL = "lobby"


# --- host calls -------------------------------------------------------------


def describe_error(value: object) -> str:
    """A readable text for a broadcast-error or kv-error variant."""
    name = type(value).__name__.split("_", 1)[-1]
    payload = getattr(value, "value", None)
    return name if payload is None else f"{name}: {payload}"


def info(text: str) -> None:
    log.log(log.Level.INFO, text)


def warn(text: str) -> None:
    log.log(log.Level.WARN, text)


def kv_count(key: str, delta: int = 1) -> int:
    raw = kv.get(key)
    count = int(raw.decode()) if raw else 0
    count += delta
    kv.set(key, str(count).encode())
    return count


def setting_int(key: str, default: int, low: int, high: int) -> int:
    raw = settings.get(key)
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return value if low <= value <= high else default


def send(channel: str, text: str, reply_to: str | None, key: str | None) -> None:
    msg = types.Message(
        channel=channel,
        content=types.Content_Text(text),
        sender=settings.get("sender"),
        extra=None,
        idempotency_key=key,
        reply_to=reply_to,
        options=None,
    )
    broadcast.send_broadcast(msg)


# --- the bot ----------------------------------------------------------------


def table() -> list[Entry]:
    text = settings.get("faq")
    if text is None:
        raise FaqError("setting `faq` is missing: a JSON list of {keywords, answer}")
    return parse_table(text)


def answer_for(text: str) -> Entry | None:
    """The best entry for `text`, counted in kv, or None (counted too)."""
    entry = best_match(table(), text, setting_int("min-score", 1, 1, 100))
    if entry is None:
        kv_count("unanswered")
        return None
    kv_count(f"hits/{entry.id}")
    kv_count("answered")
    info(f"answered with `{entry.id}`")
    return entry


def on_chat(msg: types.ChatMessage) -> None:
    if parse_bool(settings.get("questions-only"), True) and not is_question(msg.text):
        return
    entry = answer_for(msg.text)
    if entry is not None:
        text = entry.answer
    else:
        text = settings.get("fallback")
        if text is None:
            return
    key = f"faq-{msg.message_id}" if msg.message_id is not None else None
    send(msg.channel, text, msg.conversation, key)


def on_ask(payload: str) -> None:
    try:
        data = json.loads(payload)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise FaqError('`ask` needs a payload like {"text": "When are you open?"}')
    entry = answer_for(data["text"])
    if entry is None:
        raise FaqError(f"no FAQ entry matches `{data['text']}`")
    send(CHANNEL, entry.answer, None, None)


def stats() -> str:
    answered = kv.get("answered")
    unanswered = kv.get("unanswered")
    parts = [
        f"answered {int(answered.decode()) if answered else 0}",
        f"unanswered {int(unanswered.decode()) if unanswered else 0}",
    ]
    for key in kv.list_keys("hits/", 1000):
        count = kv.get(key)
        parts.append(f"{key.removeprefix('hits/')} {int(count.decode()) if count else 0}")
    return ", ".join(parts)


def on_custom(event: types.CustomEvent) -> None:
    if event.name == "ask":
        on_ask(event.payload)
    elif event.name == "stats":
        info(stats())
    elif event.name == "reset-stats":
        for key in ["answered", "unanswered", *kv.list_keys("hits/", 1000)]:
            kv.delete(key)
        info("statistics reset")
    else:
        raise FaqError(f"unknown event `{event.name}`; this bot knows ask, stats and reset-stats")


class Handler(exports.Handler):
    def describe(self) -> types.Manifest:
        return types.Manifest(
            name="faq",
            version=VERSION,
            channels=[CHANNEL],
            events=[types.EventKind.CHAT_MESSAGE, types.EventKind.CUSTOM],
            schedules=[],
        )

    def handle(self, event: types.Event) -> None:
        try:
            if isinstance(event, types.Event_ChatMessage):
                on_chat(event.value)
            elif isinstance(event, types.Event_Custom):
                on_custom(event.value)
        except FaqError as err:
            raise Err(str(err)) from None
        except Err as err:
            # A host call failed: kv quota, a refused broadcast.
            raise Err(describe_error(err.value)) from None
