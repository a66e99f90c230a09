"""The prompt policy: a blocklist of categories, checked before a clip is queued.

The list is a data file (`configs/policy/default.yaml`, or ``$VIDEOGEN_BLOCKLIST``). Matching is
whole-word and ignores case and accents: text is NFKD-normalised, combining marks are dropped, it
is case-folded and split into words, and a term (one or more words) matches only a run of whole
words. So "Décapitation" matches ``decapitation`` while "gorgeous" does not match ``gore``. A
rejected prompt is told its category, never the term.
"""

from __future__ import annotations

import os
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from .errors import RequestError
from .presets import Strict, configs_dir, load_yaml

_WORD = re.compile(r"\w+")


class Blocklist(Strict):
    """A policy file: a name and, per category, the words and phrases it blocks."""

    name: str
    categories: dict[str, list[str]]


class PolicyError(RequestError):
    """A prompt the policy rejects; ``category`` names why."""

    def __init__(self, field: str, value, category: str):
        self.category = category
        super().__init__(field, value, f"blocked by the prompt policy (category: {category})")


def words(text: str) -> tuple[str, ...]:
    """Text as case-folded words with accents removed: "Éclair-Noir" -> ("eclair", "noir")."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return tuple(_WORD.findall(plain.casefold()))


class PromptPolicy:
    """A compiled blocklist.

    Args:
        blocklist: the categories and their terms.
    """

    def __init__(self, blocklist: Blocklist):
        self.name = blocklist.name
        self._terms = [(words(term), category) for category, terms in blocklist.categories.items() for term in terms]
        self._terms = [(w, c) for w, c in self._terms if w]

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "PromptPolicy":
        """Read a policy file: ``path``, else ``$VIDEOGEN_BLOCKLIST``, else the default in ``configs/policy/``."""
        path = path or os.environ.get("VIDEOGEN_BLOCKLIST") or configs_dir() / "policy" / "default.yaml"
        return cls(load_yaml(Path(path), Blocklist))

    def category(self, text: str) -> str | None:
        """The first category whose term appears in ``text`` as whole words, or None."""
        found = words(text)
        for term, category in self._terms:
            n = len(term)
            if any(found[i : i + n] == term for i in range(len(found) - n + 1)):
                return category
        return None

    def check(self, request: dict) -> None:
        """Raise `PolicyError` if the request's prompt is blocked (the negative prompt says what to avoid, so it is not checked).

        Args:
            request: a clip request as a dict (``prompt`` is read).
        """
        prompt = request.get("prompt") or ""
        category = self.category(prompt)
        if category is not None:
            raise PolicyError("prompt", prompt, category)


@lru_cache(maxsize=None)
def default_policy() -> PromptPolicy:
    """The policy the CLI and batch paths check (``$VIDEOGEN_BLOCKLIST`` or the default file), read once."""
    return PromptPolicy.load()
