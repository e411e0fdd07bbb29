"""Keep API keys out of what a run stores and prints.

A server's error body can echo the request's credentials (an OpenAI-style 401 says "Incorrect API
key provided: sk-..."), and error texts are stored in ``sessions.error`` and shown in reports. Keys
are only ever read from the environment variable a backend names, so those values are known and
are removed wherever they appear, together with anything shaped like a bearer token or a key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from personasim.agents.backends import BackendConfig

REDACTED_SECRET = "[secret removed]"

#: Token shapes removed even when their value is not known: an Authorization header's bearer token,
#: OpenAI-style keys (sk-..., sk-proj-...), Hugging Face tokens (hf_...).
_SHAPES = (
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{10,}"),
)


def configured_secrets(backends: Iterable[BackendConfig]) -> list[str]:
    """The API key values the given backends read from the environment (those set and non-trivial)."""
    values = {os.environ.get(b.api_key_env, "") for b in backends if b.api_key_env}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def scrub_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret and every token-shaped string replaced by a marker."""
    for secret in secrets:
        text = text.replace(secret, REDACTED_SECRET)
    for shape in _SHAPES:
        text = shape.sub(REDACTED_SECRET, text)
    return text
