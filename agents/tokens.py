"""A deterministic, offline token count.

No tokenizer file can be downloaded here, and counts must not depend on which model is plugged
in, so context sizes are measured in one fixed unit: words and punctuation marks (close to GPT
BPE counts for English prose; roughly 0.8 of them).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def truncate_to_tokens(lines: list[str], budget: int) -> list[str]:
    """Keep the most recent lines whose total count fits ``budget`` (oldest dropped first)."""
    kept: list[str] = []
    total = 0
    for line in reversed(lines):
        n = count_tokens(line)
        if total + n > budget:
            break
        kept.append(line)
        total += n
    kept.reverse()
    return kept
