"""Reading a model's multiple-choice answer.

PersonaMem-v2 asks for ``\\boxed{a}`` (its RL reward) or ``Final Answer: X``; models also answer
``(b)``, ``b)`` or a bare ``b``. Anything else is unparseable and scored as wrong, never guessed.
"""

from __future__ import annotations

import re

_PATTERNS = [
    re.compile(r"\\boxed\{\s*\(?([a-z])\)?\s*\}", re.IGNORECASE),
    re.compile(r"final answer\s*[:\-]?\s*\(?([a-z])\)?(?![a-z])", re.IGNORECASE),
    re.compile(r"(?<![a-z])\(([a-z])\)", re.IGNORECASE),
    re.compile(r"^\s*([a-z])\s*[).:]?\s*$", re.IGNORECASE),
    re.compile(r"^\s*([a-z])[).:](?:\s|$)", re.IGNORECASE),
]


def parse_choice(text: str, n_options: int) -> int | None:
    """Index of the chosen option, or None if the answer names no valid letter unambiguously."""
    for pattern in _PATTERNS:
        found = {m.group(1).lower() for m in pattern.finditer(text.strip())}
        if len(found) == 1:
            index = ord(found.pop()) - ord("a")
            return index if 0 <= index < n_options else None
        if len(found) > 1:
            return None
    return None


def letters(n: int) -> list[str]:
    return [chr(ord("a") + i) for i in range(n)]
