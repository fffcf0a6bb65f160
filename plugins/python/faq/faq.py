"""The FAQ bot's logic: reading the table and matching questions against it.

Pure Python with no host calls, so `python3 -m unittest` runs it natively
(`test_faq.py`); `app.py` connects it to the botbox interfaces.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass


class FaqError(Exception):
    """A problem to report as the event's error."""


@dataclass(frozen=True)
class Entry:
    """One question the bot can answer."""

    id: str
    keywords: tuple[str, ...]
    answer: str


MAX_ENTRIES = 200
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def normalize(text: str) -> str:
    """Lower case without accents, words separated by single spaces."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.findall(r"\w+", bare))


def parse_table(text: str) -> list[Entry]:
    """The `faq` setting: a JSON list of entries, or an object of shorthands.

    List form: `[{"id": "hours", "keywords": ["open", "opening hours"],
    "answer": "9 to 5"}]` (`id` optional, defaults to the entry's position).
    Object form: `{"opening hours": "9 to 5"}`: the key is the id, and its
    words are the keywords.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise FaqError(f"setting `faq` is not JSON: {err}") from None
    if isinstance(raw, dict):
        raw = [
            {"id": key, "keywords": [key], "answer": answer}
            for key, answer in raw.items()
        ]
    if not isinstance(raw, list):
        raise FaqError("setting `faq` must be a JSON list of entries or an object")
    if len(raw) > MAX_ENTRIES:
        raise FaqError(f"setting `faq` has {len(raw)} entries; at most {MAX_ENTRIES}")
    entries = []
    seen = set()
    for position, item in enumerate(raw, start=1):
        where = f"setting `faq`, entry {position}"
        if not isinstance(item, dict):
            raise FaqError(f"{where}: not an object")
        answer = item.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            raise FaqError(f"{where}: needs a non-empty \"answer\"")
        keywords = item.get("keywords")
        if isinstance(keywords, str):
            keywords = [keywords]
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            raise FaqError(f"{where}: \"keywords\" must be a list of strings")
        normalized = tuple(k for k in (normalize(k) for k in keywords) if k)
        if not normalized:
            raise FaqError(f"{where}: needs at least one keyword")
        entry_id = str(item.get("id", position))
        key_safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", normalize(entry_id)).strip("-")[:64]
        if not ID_PATTERN.match(key_safe or ""):
            raise FaqError(f"{where}: id `{entry_id}` has no letters or digits")
        if key_safe in seen:
            raise FaqError(f"{where}: id `{key_safe}` is used twice")
        seen.add(key_safe)
        entries.append(Entry(key_safe, normalized, answer.strip()))
    return entries


def score(entry: Entry, text: str) -> int:
    """How many of the entry's keywords the normalized text contains, as
    whole words (a keyword of several words must appear as a phrase)."""
    padded = f" {text} "
    return sum(1 for keyword in entry.keywords if f" {keyword} " in padded)


def best_match(entries: list[Entry], text: str, min_score: int = 1) -> Entry | None:
    """The entry with the most keywords in `text`; the first on a tie;
    None when none reaches `min_score`."""
    normalized = normalize(text)
    best, best_score = None, 0
    for entry in entries:
        s = score(entry, normalized)
        if s > best_score:
            best, best_score = entry, s
    return best if best is not None and best_score >= max(min_score, 1) else None


def is_question(text: str) -> bool:
    return "?" in text


def parse_bool(text: str | None, default: bool) -> bool:
    if text is None:
        return default
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    return default
