"""Filler exchanges: seeded, sized by tokens, true (maths), varied, and free of anything personal.

Filler pads long histories (PersonaMem-v2's 128k preset), so every property a scorer relies on is
checked on a large sample: no catalog option is named (it would count as a reveal), no user turn is
a first-person statement (a note-taking memory would keep it), and the maths is right.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from fractions import Fraction
from importlib import resources

import pytest
from pydantic import ValidationError

from personasim.agents.memory.rules import personal_sentences
from personasim.agents.recommendations import mentioned_options
from personasim.agents.tokens import count_tokens
from personasim.personas.catalog import load_topic_catalog
from personasim.worlds.filler import CodingTask, FillerExchange, filler_exchanges

SAMPLE_SIZE = 2000


@pytest.fixture(scope="module")
def sample() -> list[FillerExchange]:
    """2,000 exchanges from one seed, drawn in several calls as a session runner would."""
    rng = random.Random(2024)
    out: list[FillerExchange] = []
    while len(out) < SAMPLE_SIZE:
        out += filler_exchanges(rng, 4000, count_tokens)
    return out[:SAMPLE_SIZE]


def _size(exchanges: list[FillerExchange]) -> int:
    return sum(count_tokens(e.user) + count_tokens(e.assistant) for e in exchanges)


def test_same_seed_same_exchanges_and_other_seeds_differ():
    a = filler_exchanges(random.Random(5), 3000, count_tokens)
    b = filler_exchanges(random.Random(5), 3000, count_tokens)
    c = filler_exchanges(random.Random(6), 3000, count_tokens)
    assert a == b
    assert [e.assistant for e in a] != [e.assistant for e in c]


@pytest.mark.parametrize("target", [1, 57, 800, 5000, 30000])
def test_total_reaches_target_without_overshooting_by_more_than_one_exchange(target):
    out = filler_exchanges(random.Random(target), target, count_tokens)
    total = _size(out)
    assert total >= target
    assert total - _size(out[-1:]) < target


@pytest.mark.parametrize("target", [0, -1, -500])
def test_non_positive_target_gives_nothing(target):
    assert filler_exchanges(random.Random(1), target, count_tokens) == []


def test_the_counter_passed_in_is_the_one_used():
    # one "token" per character: the same target needs many fewer exchanges than with words
    by_chars = filler_exchanges(random.Random(3), 20000, len)
    assert sum(len(e.user) + len(e.assistant) for e in by_chars) >= 20000
    assert len(by_chars) < len(filler_exchanges(random.Random(3), 20000, count_tokens))


def test_a_counter_that_counts_nothing_is_refused_instead_of_looping_forever():
    with pytest.raises(ValueError, match="token counter"):
        filler_exchanges(random.Random(1), 10, lambda text: 0)


def test_exchanges_are_frozen():
    exchange = filler_exchanges(random.Random(1), 10, count_tokens)[0]
    with pytest.raises(ValidationError):
        exchange.user = "changed"  # type: ignore[misc]


def test_kinds_are_mixed_in_roughly_the_intended_shares(sample):
    shares = {k: n / len(sample) for k, n in Counter(e.kind for e in sample).items()}
    assert set(shares) == {"maths", "coding", "general"}
    assert 0.35 <= shares["maths"] <= 0.45
    assert 0.30 <= shares["coding"] <= 0.40
    assert 0.20 <= shares["general"] <= 0.30


def test_answer_lengths_per_kind(sample):
    bounds = {"maths": (60, 300), "coding": (80, 350), "general": (60, 300)}
    for e in sample:
        low, high = bounds[e.kind]
        assert low <= count_tokens(e.assistant) <= high, (e.kind, e.user)
        assert e.user.strip() and "{{" not in e.user + e.assistant
    for e in sample:
        if e.kind == "coding":
            assert "```" in e.assistant


def test_variety(sample):
    assert len({e.assistant for e in sample}) / len(sample) >= 0.90
    # repeats are rare within each kind too, not only overall
    for kind in ("maths", "coding", "general"):
        texts = [e.assistant for e in sample if e.kind == kind]
        assert len(set(texts)) / len(texts) >= 0.90, kind


def test_no_catalog_option_is_named_in_generated_exchanges(sample):
    catalog = load_topic_catalog()
    for e in sample:
        assert mentioned_options(e.user, catalog) == [], e.user
        assert mentioned_options(e.assistant, catalog) == [], e.assistant


def _bank_strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [k, *_bank_strings(v)]]
    if isinstance(node, list):
        return [s for v in node for s in _bank_strings(v)]
    return []


def test_no_catalog_option_is_named_anywhere_in_the_banks():
    catalog = load_topic_catalog()
    folder = resources.files("personasim.worlds").joinpath("data/filler")
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".json"))
    assert {f.name for f in files} >= {"coding.json", "general.json"}
    for f in files:
        strings = _bank_strings(json.loads(f.read_text(encoding="utf-8")))
        assert len(strings) > 500
        hits = [(s, mentioned_options(s, catalog)) for s in strings if mentioned_options(s, catalog)]
        assert hits == [], f"{f.name}: {hits[:5]}"


def test_user_turns_hold_nothing_a_note_taker_would_keep(sample):
    for e in sample:
        assert personal_sentences(e.user) == [], e.user


def test_banks_are_large_and_cover_every_language():
    from personasim.worlds.filler import _coding_bank, _general_bank

    coding, general = _coding_bank(), _general_bank()
    assert len(coding.tasks) >= 40
    assert Counter(t.lang for t in coding.tasks).keys() == {"py", "node", "postgresql", "bash"}
    assert min(Counter(t.lang for t in coding.tasks).values()) >= 8
    assert len(general.items) >= 60


def test_coding_task_slots_are_validated():
    base = {"id": "t", "lang": "py", "asks": ["Write {{fn}}."], "answer": ["```py", "def {{fn}}(): pass", "```"]}
    CodingTask.model_validate({**base, "vary": [[{"fn": "a"}, {"fn": "b"}]]})
    with pytest.raises(ValidationError, match="undeclared"):
        CodingTask.model_validate(base)
    with pytest.raises(ValidationError, match="unused"):
        CodingTask.model_validate({**base, "vary": [[{"fn": "a", "extra": "x"}]]})
    with pytest.raises(ValidationError, match="same slots"):
        CodingTask.model_validate({**base, "vary": [[{"fn": "a"}, {"other": "b"}]]})
    with pytest.raises(ValidationError, match="code block"):
        CodingTask.model_validate({**base, "answer": ["def {{fn}}(): pass"], "vary": [[{"fn": "a"}]]})


# ---- maths: parse problems back out of the text and check the stated answers

_EQUATION = re.compile(r"[\dx][\dx +\-]*=[\dx +\-]*\d")
_PAIR = re.compile(r"(\d*x \+ \d*y = -?\d+)")
_EXPR = re.compile(r"[\d(][\d ()+\-×÷]*[\d)]")


def _linear_side(side: str, **values: int) -> int:
    expr = re.sub(r"(\d)([xy])", r"\1*\2", side)
    return eval(expr, {"__builtins__": {}}, values)  # noqa: S307 - digits, x, y and + - * only (regex above)


def _arith(expr: str) -> Fraction:
    assert re.fullmatch(r"[\d ()+\-×÷]+", expr)
    py = re.sub(r"(\d+)", r"Fraction(\1)", expr.replace("×", "*").replace("÷", "/"))
    return eval(py, {"__builtins__": {}, "Fraction": Fraction})  # noqa: S307 - whitelisted characters only


def test_maths_answers_are_correct(sample):
    maths = [e for e in sample if e.kind == "maths"]
    checked = Counter()
    for e in maths:
        if "y" in e.user and (pair := _PAIR.findall(e.user)):
            x, y = map(int, re.search(r"So x = (-?\d+) and y = (-?\d+)\.$", e.assistant).groups())
            for eq in pair:
                left, right = eq.split(" = ")
                assert _linear_side(left, x=x, y=y) == int(right), (e.user, e.assistant)
            checked["simultaneous"] += 1
        elif (eq := _EQUATION.search(e.user)) and "x" in eq.group():
            x = int(re.search(r"So x = (-?\d+)\.$", e.assistant).group(1))
            left, right = eq.group().split(" = ")
            assert _linear_side(left, x=x) == _linear_side(right, x=x), (e.user, e.assistant)
            checked["equation"] += 1
        elif "×" in e.user or "÷" in e.user:
            expr = max(_EXPR.findall(e.user), key=len)
            stated = re.search(r"So (.+?) = (-?\d+)\.", e.assistant)
            assert stated.group(1) == expr
            assert _arith(expr) == int(stated.group(2)), (e.user, e.assistant)
            checked["arithmetic"] += 1
        elif m := re.search(r"(\d+)(?:%| percent) of (\d+)\?", e.user):
            stated = re.search(r"So \d+% of \d+ is (-?[\d.]+)\.", e.assistant)
            assert Fraction(stated.group(1)) == Fraction(int(m.group(1)) * int(m.group(2)), 100)
            checked["percentage"] += 1
        elif m := re.search(r"(\d+)/(\d+) ([+-]) (\d+)/(\d+)\?", e.user):
            a, b, op, c, d = m.groups()
            want = Fraction(int(a), int(b)) + (1 if op == "+" else -1) * Fraction(int(c), int(d))
            stated = re.search(r"= (-?\d+)(?:/(\d+))?, which is about", e.assistant)
            assert Fraction(int(stated.group(1)), int(stated.group(2) or 1)) == want
            checked["fractions"] += 1
        elif m := re.search(r"mean, median and range of (?:this data set: )?([\d, ]+)\?", e.user):
            data = [int(v) for v in m.group(1).split(", ")]
            stated = re.search(r"So the mean is ([\d.]+), the median ([\d.]+) and the range (\d+)\.", e.assistant)
            mean, median, spread = stated.groups()
            assert abs(float(mean) - sum(data) / len(data)) < 0.006
            ordered = sorted(data)
            middle = len(data) // 2
            want_median = ordered[middle] if len(data) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
            assert float(median) == want_median and int(spread) == ordered[-1] - ordered[0]
            checked["statistics"] += 1
        elif m := re.search(r"(?:[Ss]plit|Divide) (\d+) in the ratio ([\d:]+)", e.user):
            parts = [int(v) for v in m.group(2).split(":")]
            portions = [int(v) for v in re.search(r"So the portions are ([\d, ]+)\.", e.assistant).group(1).split(", ")]
            assert sum(portions) == int(m.group(1))
            assert all(Fraction(p, q) == Fraction(portions[0], parts[0]) for p, q in zip(portions, parts, strict=True))
            checked["ratio"] += 1
        elif m := re.search(r"legs of (\d+) cm and (\d+) cm", e.user):
            stated = re.search(r"So the hypotenuse is (?:about )?([\d.]+) cm\.", e.assistant)
            assert abs(float(stated.group(1)) - (int(m.group(1)) ** 2 + int(m.group(2)) ** 2) ** 0.5) < 0.006
            checked["pythagoras"] += 1
    for family in ("equation", "simultaneous", "arithmetic", "percentage", "fractions", "statistics", "ratio",
                   "pythagoras"):
        assert checked[family] >= 5, checked


def test_maths_answers_show_their_working(sample):
    for e in sample:
        if e.kind == "maths":
            steps = re.findall(r"^(?:Step )?(\d)\. ", e.assistant, re.MULTILINE)
            assert steps[:2] == ["1", "2"], e.assistant
            assert re.search(r"^(?:Step )?\d\. .*\d.*[=≈] .*\d", e.assistant, re.MULTILINE), e.assistant


def _repl_checks(answer: str) -> list[tuple[str, str | None]]:
    """(`>>>` line, the output shown under it or None) for every prompt in an answer's code blocks."""
    lines = answer.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith(">>> "):
            shown = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith((">>> ", "```")) else None
            out.append((line[4:], shown))
    return out


def test_python_answers_show_what_their_code_returns():
    """Run the definitions of every Python answer and replay its `>>>` session against the shown output."""
    from personasim.worlds.filler import _SLOT, _coding_bank

    rng = random.Random(0)
    # these sessions show the user's broken version, or need a file on disk
    skip = {"py-mutable-default", "py-csv-average"}
    replayed = 0
    for task in _coding_bank().tasks:
        if task.lang != "py" or task.id in skip or not any(line.startswith(">>>") for line in task.answer):
            continue
        for _ in range(12):
            values: dict[str, str] = {}
            for group in task.vary:
                values.update(rng.choice(group))
            answer = "\n".join(_SLOT.sub(lambda m, v=values: v[m.group(1)], line) for line in task.answer)
            first_block = answer.split("```py\n", 1)[1].split("```", 1)[0]
            env: dict = {}
            if not first_block.startswith(">>>"):
                exec(first_block, env)  # noqa: S102 - the bank's own code
            for source, shown in _repl_checks(answer):
                if shown is None:
                    exec(source, env)  # noqa: S102
                else:
                    assert repr(eval(source, env)) == shown, (task.id, source)  # noqa: S307
                    replayed += 1
    assert replayed >= 150
