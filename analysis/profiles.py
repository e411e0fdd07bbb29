"""Each persona's demographic profile as one sentence: what a stereotype-only reader goes by.

The audit's ``persona_prior`` blind reader scores options against it, and the question generator
balances distractors against it (``QuestionConfig.balance_profile``); both read it from here.
"""

from __future__ import annotations

import duckdb


def profile_text(age: int | None, gender: str, occupation: str, city: str, country: str) -> str | None:
    """A one-paragraph demographic profile ("A 34-year-old nurse from Leeds, United Kingdom, female."),
    or None when nothing is known, so persona_prior then answers at chance instead of guessing."""
    age_part = f"{age}-year-old " if age is not None and age >= 0 else ""
    who = occupation.strip() or "person"
    place = ", ".join(p.strip() for p in (city, country) if p and p.strip())
    if not (age_part or occupation.strip() or place or gender.strip()):
        return None
    text = f"{_article(age_part or who)} {age_part}{who}"
    if place:
        text += f" from {place}"
    if gender.strip():
        text += f", {gender.strip()}"
    return text + "."


def _article(word: str) -> str:
    """"An" before a vowel sound ("an engineer", "an 18-year-old", "an 80-year-old"), else "A"."""
    vowel = word[:1].lower() in tuple("aeiou") or word.startswith(("8", "11-", "18-"))
    return "An" if vowel else "A"


def load_profiles(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, str | None]:
    """Each persona's demographic profile from the ``personas`` table (None where it says nothing)."""
    rows = con.execute(
        "SELECT persona_id, age, gender, occupation, city, country FROM personas WHERE run_id = ?", [run_id]
    ).fetchall()
    return {r[0]: profile_text(r[1], r[2] or "", r[3] or "", r[4] or "", r[5] or "") for r in rows}
