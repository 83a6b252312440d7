"""Text normalisation shared by every stage: one definition of when two queries are the same query."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_query(text: str) -> str:
    """NFKC, case-folded, every run of punctuation/whitespace collapsed to one space, stripped.

    Used for query identity everywhere: split grouping, leakage checks, duplicate and conflict counts, and matching
    a pairs file's queries to a collection's."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
