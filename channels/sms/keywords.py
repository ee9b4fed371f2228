"""What recipients reply: STOP (and its kin, in English and Russian) to stop messages, START to get
them again."""

from __future__ import annotations

import re
import unicodedata

STOP_WORDS = frozenset({
    "stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "revoke",
    "стоп", "отписаться", "отписка", "отпишите", "отписать", "отмена",
})
START_WORDS = frozenset({"start", "unstop", "старт"})
# Letters that look alike in Latin and Cyrillic, so "CTOП" or "stоp" typed on a mixed keyboard still counts.
_LATIN, _CYRILLIC = "aceopxykmthb", "асеорхукмтнв"
_AS_CYRILLIC, _AS_LATIN = str.maketrans(_LATIN, _CYRILLIC), str.maketrans(_CYRILLIC, _LATIN)
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def is_stop(text: str) -> bool:
    """Whether an inbound message, as a whole, asks to stop messages (STOP, UNSUBSCRIBE, СТОП, ОТПИСКА…):
    any case, spacing and surrounding punctuation; "don't stop" is not one."""
    return _is_keyword(text, STOP_WORDS)


def is_start(text: str) -> bool:
    """Whether an inbound message, as a whole, asks to start again (START, UNSTOP, СТАРТ)."""
    return _is_keyword(text, START_WORDS)


def _is_keyword(text: str, words: frozenset[str]) -> bool:
    word = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    word = re.sub(r"\s+", "", _EDGES.sub("", word.strip()))
    return bool({word, word.translate(_AS_CYRILLIC), word.translate(_AS_LATIN)} & words)
