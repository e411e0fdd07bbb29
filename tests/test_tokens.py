"""The token count is one fixed unit (words and punctuation marks), whichever way it is computed."""

from __future__ import annotations

import random
import re

from personasim.agents.tokens import count_tokens

_WHOLE = re.compile(r"\w+|[^\w\s]")


def test_a_long_text_counted_line_by_line_gives_the_whole_texts_count():
    rng = random.Random(7)
    pieces = ["word", "naïve", "café", "42", "x_y", "!", "?!", "...", " ", "  ", "\n", "\n\n", "\t", "é", "—", "[", "]"]
    for length in (10, 900, 3000, 9000):
        text = "".join(rng.choice(pieces) for _ in range(length))
        assert count_tokens(text) == len(_WHOLE.findall(text))
    # one line longer than the cache's limit, beside short ones
    text = "short line.\n" + "a, " * 3000 + "\nlast one!"
    assert len(text) > 4000 and count_tokens(text) == len(_WHOLE.findall(text))


def test_ascii_counting_agrees_with_the_pattern_on_every_ascii_character():
    rng = random.Random(11)
    alphabet = [chr(c) for c in range(128)]
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert count_tokens(text) == len(_WHOLE.findall(text)), repr(text)
    for text in ("naïve café — ok", "über\u00a0alles", "x\x1cy", "a_b 12,5"):
        assert count_tokens(text) == len(_WHOLE.findall(text))
