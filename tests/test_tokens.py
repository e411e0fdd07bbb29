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
