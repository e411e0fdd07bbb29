"""Filler exchanges for long histories: maths, coding and general questions unrelated to any persona.

PersonaMem-v2 pads its 128k-token histories with unrelated conversations (about two thirds of the
tokens), so that a memory has to find the few personal turns among many impersonal ones. This
module supplies such exchanges; the session runner decides where they go and records them as
filler. Three properties matter more than polish:

- **Impersonal.** Nothing may name an option of the preference catalog (a keyword detector would
  count it as a reveal) and user turns are requests or questions, never first-person statements
  about a life, so a note-taking memory finds nothing personal to keep. The banks were written
  against the catalog's keyword list, and the tests scan them and a large generated sample.
- **True.** Maths answers are computed from seeded numbers with the working shown, so a reader (or
  a model trained on the history) never meets a wrong sum.
- **Varied and cheap.** Numbers, names and phrasings are drawn from the caller's ``random.Random``,
  so the same seed gives the same filler and repeats are rare; parsed banks are cached, because a
  128k-token history needs hundreds of exchanges per user.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from fractions import Fraction
from functools import cache
from importlib import resources
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FillerKind = Literal["maths", "coding", "general"]

# Share of each kind: maths and coding help dominate PersonaMem-v2's padding, general questions fill the rest.
_KIND_WEIGHTS: tuple[tuple[FillerKind, float], ...] = (("maths", 0.40), ("coding", 0.35), ("general", 0.25))


class FillerExchange(BaseModel):
    """One user request and the assistant's reply, about nothing personal."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FillerKind
    user: str
    assistant: str


def filler_exchanges(rng: random.Random, tokens: int, count: Callable[[str], int]) -> list[FillerExchange]:
    """Exchanges whose user+assistant token total (by `count`) reaches `tokens` without overshooting by more
    than one exchange; [] for tokens <= 0.

    ``count`` is passed in rather than imported because token counting lives in ``agents`` and
    worlds must not depend on it; the runner passes the same counter it records turns with, so the
    filler it asked for is the filler it measures."""
    out: list[FillerExchange] = []
    total = 0
    while total < tokens:
        exchange = _one(rng)
        size = count(exchange.user) + count(exchange.assistant)
        if size <= 0:  # a counter that sees nothing would never reach the target
            raise ValueError(f"count() gave {size} tokens for a non-empty exchange; pass a real token counter")
        out.append(exchange)
        total += size
    return out


def _pick_kind(rng: random.Random) -> FillerKind:
    roll = rng.random()
    for kind, weight in _KIND_WEIGHTS:
        if roll < weight:
            return kind
        roll -= weight
    return _KIND_WEIGHTS[-1][0]


def _one(rng: random.Random) -> FillerExchange:
    kind = _pick_kind(rng)
    if kind == "maths":
        user, assistant = rng.choice(_MATHS_FAMILIES)(rng)
    elif kind == "coding":
        user, assistant = _coding(rng)
    else:
        user, assistant = _general(rng)
    return FillerExchange(kind=kind, user=user, assistant=assistant)


# --------------------------------------------------------------------------------------------
# Banks (coding, general): JSON under worlds/data/filler/, validated once and cached.

_SLOT = re.compile(r"\{\{(\w+)\}\}")

CodingLang = Literal["py", "node", "postgresql", "bash"]


class CodingTask(BaseModel):
    """A coding request with its answer; ``{{name}}`` slots are filled from ``vary`` for variety.

    Each group of ``vary`` is a list of alternatives, and each alternative a set of slot values
    chosen together (an input and its output stay consistent)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    lang: CodingLang
    asks: list[str] = Field(min_length=1, description="User requests; none names a language (catalog keywords).")
    snippet: list[str] = Field(default_factory=list, description="Code the user pastes under the request.")
    answer: list[str] = Field(min_length=1, description="Answer lines: a fenced code block and a short explanation.")
    vary: list[list[dict[str, str]]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _slots(self) -> CodingTask:
        declared: set[str] = set()
        for group in self.vary:
            if not group:
                raise ValueError(f"{self.id}: empty vary group")
            keys = set(group[0])
            if any(set(alt) != keys for alt in group):
                raise ValueError(f"{self.id}: alternatives of one vary group must set the same slots")
            if keys & declared:
                raise ValueError(f"{self.id}: slots {sorted(keys & declared)} set by two groups")
            declared |= keys
        used = {m for line in (*self.asks, *self.snippet, *self.answer) for m in _SLOT.findall(line)}
        if used - declared:
            raise ValueError(f"{self.id}: undeclared slots {sorted(used - declared)}")
        if declared - used:
            raise ValueError(f"{self.id}: unused slots {sorted(declared - used)}")
        if not any(line.startswith("```") for line in self.answer):
            raise ValueError(f"{self.id}: the answer needs a code block")
        return self


def _require_unique_ids(ids: list[str], what: str) -> None:
    """Ids name an exchange in tests and bug reports, so two entries may not share one."""
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate {what} ids: {dupes}")


class CodingBank(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intros: list[str] = Field(min_length=1)
    tasks: list[CodingTask] = Field(min_length=40)

    @model_validator(mode="after")
    def _unique(self) -> CodingBank:
        _require_unique_ids([t.id for t in self.tasks], "coding task")
        return self


class GeneralItem(BaseModel):
    """A general-knowledge question: a core answer plus extra facts, of which a seeded subset is told."""

    model_config = ConfigDict(extra="forbid")

    id: str
    asks: list[str] = Field(min_length=1)
    answer: str
    extras: list[str] = Field(min_length=3)


class GeneralBank(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intros: list[str] = Field(min_length=1)
    items: list[GeneralItem] = Field(min_length=60)

    @model_validator(mode="after")
    def _unique(self) -> GeneralBank:
        _require_unique_ids([i.id for i in self.items], "general item")
        return self


_Bank = TypeVar("_Bank", CodingBank, GeneralBank)


def _read_bank(name: str, model: type[_Bank]) -> _Bank:
    f = resources.files("personasim.worlds").joinpath(f"data/filler/{name}")
    try:
        return model.model_validate(json.loads(f.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"invalid filler bank {f}: {exc}") from exc


@cache
def _coding_bank() -> CodingBank:
    return _read_bank("coding.json", CodingBank)


@cache
def _general_bank() -> GeneralBank:
    return _read_bank("general.json", GeneralBank)


def _coding(rng: random.Random) -> tuple[str, str]:
    bank = _coding_bank()
    task = rng.choice(bank.tasks)
    values: dict[str, str] = {}
    for group in task.vary:
        values.update(rng.choice(group))

    def fill(line: str) -> str:
        return _SLOT.sub(lambda m: values[m.group(1)], line)

    user = fill(rng.choice(task.asks))
    if task.snippet:
        user += "\n\n```" + task.lang + "\n" + "\n".join(fill(line) for line in task.snippet) + "\n```"
    assistant = rng.choice(bank.intros) + "\n\n" + "\n".join(fill(line) for line in task.answer)
    return user, assistant


def _general(rng: random.Random) -> tuple[str, str]:
    bank = _general_bank()
    item = rng.choice(bank.items)
    extras = [e for e in item.extras if rng.random() < 0.6] or [rng.choice(item.extras)]
    intro = rng.choice(bank.intros)
    body = item.answer + "\n\n" + " ".join(extras)
    return rng.choice(item.asks), (intro + " " + body if intro else body)


# --------------------------------------------------------------------------------------------
# Maths: every problem is generated from seeded numbers and its answer computed, working shown.


def _n(x: float, places: int = 2) -> str:
    """A number as a person writes it: no trailing zeros, at most ``places`` decimals."""
    text = f"{x:.{places}f}".rstrip("0").rstrip(".") if places else f"{round(x)}"
    return "0" if text == "-0" else text


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _paren(v: int) -> str:
    return f"({v})" if v < 0 else str(v)


def _signed(v: int) -> str:
    """`+ 7` or `- 7`, for writing a term after another one."""
    return f"+ {v}" if v >= 0 else f"- {-v}"


def _term(a: int, var: str) -> str:
    return f"{a}{var}" if a != 1 else var


def _times(a: int, b: int) -> str:
    """Working for a × b: split the larger factor into tens and units, as done on paper."""
    if a < b:
        a, b = b, a
    if b < 10 or b % 10 == 0:
        return f"{a} × {b} = {a * b}"
    tens, units = b - b % 10, b % 10
    return f"{a} × {b} = {a} × {tens} + {a} × {units} = {a * tens} + {a * units} = {a * b}"


def _linear(rng: random.Random) -> tuple[str, str]:
    a = rng.randint(2, 12)
    x = rng.choice([v for v in range(-12, 31) if v])
    b = rng.choice([v for v in range(-40, 61) if v])
    c = a * x + b
    eq = f"{a}x {_signed(b)} = {c}"
    user = rng.choice(
        [
            f"Can you solve {eq}?",
            f"How do I solve {eq} for x?",
            f"Solve {eq}, showing each step, please.",
            f"What value of x makes {eq} true?",
            f"Could you walk through solving {eq}?",
        ]
    )
    opener = rng.choice(
        [
            "To get x on its own, undo what was done to it in reverse order, doing the same to both sides so they "
            "stay equal.",
            "This is a linear equation, so two moves are enough: remove the constant, then the coefficient.",
            "Work backwards from x: first deal with the added number, then with the multiplier.",
        ]
    )
    move = (
        f"Subtract {b} from both sides: {a}x = {c} - {b} = {c - b}."
        if b > 0
        else f"Add {-b} to both sides: {a}x = {c} + {-b} = {c - b}."
    )
    answer = (
        f"{opener}\n\n"
        f"Step 1. {move}\n"
        f"Step 2. Divide both sides by {a}: x = {c - b} ÷ {a} = {x}.\n\n"
        f"Check: {a} × {_paren(x)} {_signed(b)} = {a * x} {_signed(b)} = {c}, which matches the right-hand side.\n\n"
        f"So x = {x}."
    )
    return user, answer


def _linear_both(rng: random.Random) -> tuple[str, str]:
    c = rng.randint(1, 9)
    a = c + rng.randint(1, 8)
    x = rng.choice([v for v in range(-10, 21) if v])
    b = rng.choice([v for v in range(-30, 31) if v])
    d = (a - c) * x + b
    eq = f"{_term(a, 'x')} {_signed(b)} = {_term(c, 'x')} {_signed(d)}"
    user = rng.choice(
        [f"Can you solve {eq}?", f"How do I solve {eq} when x is on both sides?", f"Find x if {eq}."]
    )
    k = a - c
    answer = (
        "With x on both sides, first collect the x terms on one side and the constant terms on the other.\n\n"
        f"Step 1. Subtract {_term(c, 'x')} from both sides: {_term(k, 'x')} {_signed(b)} = {d}.\n"
        f"Step 2. {'Subtract' if b > 0 else 'Add'} {abs(b)} {'from' if b > 0 else 'to'} both sides: "
        f"{_term(k, 'x')} = {d - b}.\n"
        + (
            f"Step 3. Divide both sides by {k}: x = {d - b} ÷ {k} = {x}.\n\n"
            if k != 1
            else f"That already gives x = {x}.\n\n"
        )
        + f"Check: the left side is {a} × {_paren(x)} {_signed(b)} = {a * x + b}, and the right side is "
        f"{c} × {_paren(x)} {_signed(d)} = {c * x + d}. Both sides agree.\n\n"
        f"So x = {x}."
    )
    return user, answer


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    form = rng.randrange(4)
    if form == 0:
        a, b, c, d = rng.randint(12, 99), rng.randint(3, 29), rng.randint(11, 60), rng.randint(2, 19)
        expr = f"{a} × {b} + {c} × {d}"
        steps = [
            "Multiplication comes before addition, so work out both products first.",
            f"First product: {_times(a, b)}.",
            f"Second product: {_times(c, d)}.",
            f"Now add them: {a * b} + {c * d} = {a * b + c * d}.",
        ]
        value = a * b + c * d
        naive = (a * b + c) * d
    elif form == 1:
        a, b, c, d = rng.randint(11, 80), rng.randint(5, 60), rng.randint(3, 19), rng.randint(10, 150)
        expr = f"({a} + {b}) × {c} - {d}"
        s = a + b
        steps = [
            "Brackets come first, then multiplication, then subtraction.",
            f"Inside the brackets: {a} + {b} = {s}.",
            f"Multiply: {_times(s, c)}.",
            f"Subtract: {s * c} - {d} = {s * c - d}.",
        ]
        value = s * c - d
        naive = a + b * c - d
    elif form == 2:
        b, q = rng.randint(3, 15), rng.randint(6, 40)
        a = b * q
        c, d = rng.randint(4, 30), rng.randint(3, 25)
        expr = f"{a} ÷ {b} + {c} × {d}"
        steps = [
            "Division and multiplication come before addition, so do both of them first.",
            f"Division: {a} ÷ {b} = {q}, because {b} × {q} = {a}.",
            f"Multiplication: {_times(c, d)}.",
            f"Add the results: {q} + {c * d} = {q + c * d}.",
        ]
        value = q + c * d
        naive = (q + c) * d
    else:
        a, b, c, d = rng.randint(50, 400), rng.randint(3, 19), rng.randint(4, 25), rng.randint(5, 90)
        expr = f"{a} - {b} × {c} + {d}"
        m = b * c
        steps = [
            "Multiplication comes first; after that, addition and subtraction go from left to right.",
            f"Multiply: {_times(b, c)}.",
            f"Left to right: {a} - {m} = {a - m}, then {a - m} + {d} = {a - m + d}.",
        ]
        value = a - m + d
        naive = (a - b) * c + d
    user = rng.choice(
        [
            f"What is {expr}?",
            f"Can you work out {expr} without a calculator?",
            f"How do I evaluate {expr}?",
            f"Please calculate {expr} and show the order of operations.",
        ]
    )
    warning = (
        f" Ignoring the order of operations (brackets first, then × and ÷, then + and -) would give {naive}, "
        "which is why the order matters."
        if naive != value
        else ""
    )
    numbered = "\n".join(f"{i}. {step}" for i, step in enumerate(steps[1:], start=1))
    answer = f"{steps[0]}\n\n{numbered}\n\nSo {expr} = {value}.{warning}"
    return user, answer


def _word_problem(rng: random.Random) -> tuple[str, str]:
    story = rng.randrange(4)
    if story == 0:
        crates, per, broken, box = rng.randint(6, 30), rng.randint(12, 48), rng.randint(3, 40), rng.randint(6, 24)
        jars = crates * per
        good = jars - broken
        full, left = divmod(good, box)
        user = (
            f"A shipment holds {crates} crates with {per} jars in each. {broken} jars arrive broken, and the rest are "
            f"repacked into boxes of {box}. How many full boxes are there, and how many jars are left over?"
        )
        answer = (
            "Break it into three parts: the total, what survives, and how it divides into boxes.\n\n"
            f"1. Total jars: {_times(crates, per)}.\n"
            f"2. Unbroken jars: {jars} - {broken} = {good}.\n"
            f"3. Boxes: {good} ÷ {box} = {full} remainder {left}, because {box} × {full} = {box * full} "
            f"and {good} - {box * full} = {left}.\n\n"
            f"So there are {full} full boxes and {left} jar{'s' if left != 1 else ''} left over."
        )
    elif story == 1:
        gap = rng.choice([2, 2.5, 3, 4, 5])
        posts_between = rng.randint(8, 60)
        length = gap * posts_between
        user = (
            f"A straight fence runs for {_n(length)} m, with a post every {_n(gap)} m, including one at each end. "
            "How many posts are needed?"
        )
        answer = (
            "The trap here is counting gaps instead of posts.\n\n"
            f"1. Number of gaps: {_n(length)} ÷ {_n(gap)} = {posts_between}.\n"
            "2. A row of posts always has one more post than gaps, because the first post has no gap before it.\n"
            f"3. Posts: {posts_between} + 1 = {posts_between + 1}.\n\n"
            f"So {posts_between + 1} posts are needed. A small case confirms the rule: a 2-gap fence has 3 posts."
        )
    elif story == 2:
        adults, children = rng.randint(40, 400), rng.randint(20, 300)
        pa, pc = rng.choice([8, 9.5, 12, 14, 15.5, 18, 22]), rng.choice([4, 5, 6.5, 7, 8.5, 9])
        ta, tc = adults * pa, children * pc
        user = (
            f"A hall sells {adults} adult tickets at {_money(pa)} and {children} child tickets at {_money(pc)}. "
            "How much is taken in total?"
        )
        answer = (
            "Work out each type of ticket separately, then add.\n\n"
            f"1. Adult tickets: {adults} × {_money(pa)} = {_money(ta)}.\n"
            f"2. Child tickets: {children} × {_money(pc)} = {_money(tc)}.\n"
            f"3. Total: {_money(ta)} + {_money(tc)} = {_money(ta + tc)}.\n\n"
            f"So the takings come to {_money(ta + tc)} from {adults + children} tickets altogether."
        )
    else:
        pumps, hours = rng.randint(2, 8), rng.randint(3, 12)
        work = pumps * hours
        other = rng.choice([p for p in range(2, 13) if p != pumps])
        result = work / other
        user = (
            f"{pumps} identical pumps fill a tank in {hours} hours. How many hours would {other} of the same pumps "
            "take?"
        )
        answer = (
            "More pumps means less time, so this is inverse proportion: the total amount of pumping stays fixed.\n\n"
            f"1. Total work in pump-hours: {pumps} × {hours} = {work} pump-hours.\n"
            f"2. Share it among {other} pumps: {work} ÷ {other} = {_n(result)} hours.\n\n"
            f"So {other} pumps take {_n(result)} hours"
            + (
                f" (that is {int(result)} hours and {_n((result - int(result)) * 60, 0)} minutes)."
                if result != int(result)
                else "."
            )
            + " A sanity check: "
            + ("more pumps than before, so the time should drop, and it does." if other > pumps else
               "fewer pumps than before, so the time should rise, and it does.")
        )
    return user, answer


def _percent(rng: random.Random) -> tuple[str, str]:
    form = rng.randrange(4)
    if form == 0:
        p, whole = rng.choice([5, 12, 15, 20, 25, 35, 40, 45, 60, 75, 85]), rng.randrange(40, 2000, 20)
        value = whole * p / 100
        user = rng.choice([f"What is {p}% of {whole}?", f"How do I find {p} percent of {whole}?"])
        answer = (
            f"Per cent means per hundred, so {p}% is the fraction {p}/100.\n\n"
            f"1. Find 1%: {whole} ÷ 100 = {_n(whole / 100)}.\n"
            f"2. Multiply by {p}: {_n(whole / 100)} × {p} = {_n(value)}.\n\n"
            f"So {p}% of {whole} is {_n(value)}. You can also multiply directly: {whole} × {_n(p / 100)} = {_n(value)}."
        )
    elif form == 1:
        old = rng.randint(40, 900)
        new = old + rng.choice([-1, 1]) * rng.randint(5, old // 2)
        change = (new - old) / old * 100
        word = "an increase" if new > old else "a decrease"
        user = f"What is the percentage change from {old} to {new}?"
        answer = (
            "Percentage change is the change divided by the starting value, times 100.\n\n"
            f"1. Change: {new} - {old} = {new - old}.\n"
            f"2. Divide by the starting value: {new - old} ÷ {old} = {_n((new - old) / old, 4)}.\n"
            f"3. Multiply by 100: {_n((new - old) / old, 4)} × 100 = {_n(change, 2)}%.\n\n"
            f"So it is {word} of about {_n(abs(change), 1)}%. Dividing by the new value instead is a common "
            "mistake, and gives a different answer."
        )
    elif form == 2:
        price, p = rng.randrange(20, 900, 5), rng.choice([10, 15, 20, 25, 30, 40])
        up = rng.random() < 0.5
        factor = 1 + p / 100 if up else 1 - p / 100
        user = f"A price of {_money(price)} is {'raised' if up else 'cut'} by {p}%. What is the new price?"
        answer = (
            f"A {p}% {'rise' if up else 'cut'} leaves {100 + p if up else 100 - p}% of the original, so multiply by "
            f"{_n(factor)}.\n\n"
            f"1. The change: {p}% of {_money(price)} = {_money(price * p / 100)}.\n"
            f"2. New price: {_money(price)} {'+' if up else '-'} {_money(price * p / 100)} = "
            f"{_money(price * factor)}.\n"
            f"3. Shortcut check: {_money(price)} × {_n(factor)} = {_money(price * factor)}.\n\n"
            f"So the new price is {_money(price * factor)}."
        )
    else:
        p, original = rng.choice([5, 10, 20, 25, 40]), rng.randrange(40, 1000, 20)
        after = original * (1 + p / 100)
        user = f"After a {p}% rise a price is {_money(after)}. What was it before the rise?"
        answer = (
            f"The new price is {100 + p}% of the old one, so undo the rise by dividing, not by taking {p}% off.\n\n"
            f"1. As a multiplier: {100 + p}% = {_n(1 + p / 100)}.\n"
            f"2. Original price: {_money(after)} ÷ {_n(1 + p / 100)} = {_money(original)}.\n"
            f"3. Check: {_money(original)} × {_n(1 + p / 100)} = {_money(after)}.\n\n"
            f"So the price was {_money(original)}. Taking {p}% off {_money(after)} would give "
            f"{_money(after * (1 - p / 100))}, which is wrong because the percentage applied to the smaller amount."
        )
    return user, answer


# (from, to, the unit "from" in the singular, factor, where the factor comes from)
_CONVERSIONS: tuple[tuple[str, str, str, float, str], ...] = (
    ("kilograms", "pounds", "kilogram", 2.20462, "1 kilogram is about 2.20462 pounds"),
    ("centimetres", "inches", "centimetre", 1 / 2.54, "1 inch is exactly 2.54 centimetres"),
    ("litres", "US gallons", "litre", 1 / 3.78541, "1 US gallon is about 3.78541 litres"),
    ("square metres", "square feet", "square metre", 10.7639, "1 square metre is about 10.7639 square feet"),
    ("metres", "feet", "metre", 1 / 0.3048, "1 foot is exactly 0.3048 metres"),
    ("kilometres per hour", "metres per second", "km/h", 1 / 3.6, "1 km/h is 1000 m in 3600 s, so divide by 3.6"),
)


def _units(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.3:
        to_f = rng.random() < 0.5
        if to_f:
            c = rng.randint(-20, 45)
            f = c * 9 / 5 + 32
            user = f"How do I convert {c} °C to Fahrenheit?"
            answer = (
                "The two scales differ in both step size and starting value: F = C × 9/5 + 32.\n\n"
                f"1. Scale: {c} × 9/5 = {_n(c * 9 / 5)}.\n"
                f"2. Offset: {_n(c * 9 / 5)} + 32 = {_n(f)}.\n\n"
                f"So {c} °C is {_n(f)} °F. Handy reference values: water freezes at 0 °C = 32 °F and boils at "
                "100 °C = 212 °F."
            )
        else:
            f_deg = rng.randint(-4, 110)
            c_val = (f_deg - 32) * 5 / 9
            user = f"What is {f_deg} °F in Celsius?"
            answer = (
                "Reverse the Celsius-to-Fahrenheit rule: C = (F - 32) × 5/9.\n\n"
                f"1. Remove the offset: {f_deg} - 32 = {f_deg - 32}.\n"
                f"2. Rescale: {f_deg - 32} × 5/9 = {_n(c_val)}.\n\n"
                f"So {f_deg} °F is about {_n(c_val, 1)} °C. The order matters: subtract 32 before scaling."
            )
        return user, answer
    src, dst, one, factor, fact = rng.choice(_CONVERSIONS)
    amount = rng.choice([rng.randint(2, 250), rng.randint(2, 99) + rng.choice([0.5, 0.25, 0.75])])
    result = amount * factor
    user = rng.choice([f"How many {dst} is {_n(amount)} {src}?", f"Convert {_n(amount)} {src} to {dst}, please."])
    how = f"multiply by {_n(factor, 5)}" if factor > 1 else f"divide by {_n(1 / factor, 5)}"
    answer = (
        f"The conversion factor: {fact}. Going from {src} to {dst}, {how}.\n\n"
        f"1. Factor: 1 {one} = {_n(factor, 5)} {dst}.\n"
        f"2. Compute: {_n(amount)} × {_n(factor, 5)} = {_n(result, 3)}.\n"
        f"3. Round: {_n(result, 3)} ≈ {_n(result, 2)} {dst}.\n\n"
        f"So {_n(amount)} {src} is about {_n(result, 2)} {dst}. A sense check: the result should be "
        f"{'larger' if factor > 1 else 'smaller'} than the starting number, and it is."
    )
    return user, answer


def _ordinal(k: int) -> str:
    return f"{k}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(k if k < 20 else k % 10, 'th')}"


def _statistics(rng: random.Random) -> tuple[str, str]:
    size = rng.randint(5, 9)
    data = [rng.randint(10, 99) for _ in range(size)]
    ordered = sorted(data)
    total = sum(data)
    mid = size // 2
    median = ordered[mid] if size % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    shown = ", ".join(map(str, data))
    user = rng.choice(
        [
            f"What are the mean, median and range of {shown}?",
            f"Can you find the mean, median and range of this data set: {shown}?",
        ]
    )
    median_step = (
        f"With {size} values the median is the middle one, the {_ordinal(mid + 1)}: {ordered[mid]}."
        if size % 2
        else f"With {size} values the median is the average of the {_ordinal(mid)} and {_ordinal(mid + 1)}: "
        f"({ordered[mid - 1]} + {ordered[mid]}) ÷ 2 = {_n(median)}."
    )
    answer = (
        f"Sort the data first, since the median and range both need it: {', '.join(map(str, ordered))}.\n\n"
        f"1. Mean: add everything and divide by the count. {' + '.join(map(str, data))} = {total}, and "
        f"{total} ÷ {size} = {_n(total / size)}.\n"
        f"2. Median: {median_step}\n"
        f"3. Range: largest minus smallest, {ordered[-1]} - {ordered[0]} = {ordered[-1] - ordered[0]}.\n\n"
        f"So the mean is {_n(total / size)}, the median {_n(median)} and the range {ordered[-1] - ordered[0]}. "
        + ("The mean and median are close, so the data has no strong outliers."
           if abs(total / size - median) < 8 else
           "The mean and median differ noticeably, a sign that a few values pull the mean to one side.")
    )
    return user, answer


def _compound(rng: random.Random) -> tuple[str, str]:
    principal = rng.randrange(500, 20001, 250)
    rate = rng.choice([1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6])
    years = rng.randint(2, 15)
    per_year, how = rng.choice([(1, "yearly"), (4, "quarterly"), (12, "monthly")])
    periods = per_year * years
    factor = (1 + rate / 100 / per_year) ** periods
    amount = principal * factor
    simple = principal * (1 + rate / 100 * years)
    user = rng.choice(
        [
            f"If {_money(principal)} is deposited at {_n(rate)}% a year compounded {how}, what is it worth after "
            f"{years} years?",
            f"How much does {_money(principal)} grow to in {years} years at {_n(rate)}% annual interest, compounded "
            f"{how}?",
        ]
    )
    answer = (
        "Use the compound interest formula A = P(1 + r/n)^(nt), where P is the principal, r the yearly rate as a "
        "decimal, n the number of compounding periods a year and t the number of years.\n\n"
        f"1. Values: P = {principal}, r = {_n(rate / 100, 4)}, n = {per_year}, t = {years}.\n"
        f"2. Rate per period: {_n(rate / 100, 4)} ÷ {per_year} = {_n(rate / 100 / per_year, 6)}.\n"
        f"3. Number of periods: {per_year} × {years} = {periods}.\n"
        f"4. Multiplier: (1 + {_n(rate / 100 / per_year, 6)})^{periods} ≈ {factor:.6f}.\n"
        f"5. Final amount: {principal} × {factor:.6f} ≈ {_money(amount)}.\n\n"
        f"So it grows to about {_money(amount)}, of which {_money(amount - principal)} is interest. Interest paid "
        f"only on the original principal would give {_money(simple)}; the difference is interest earned on interest."
    )
    return user, answer


def _area(rng: random.Random) -> tuple[str, str]:
    shape = rng.randrange(5)
    if shape == 0:
        length, width = rng.randint(3, 60), rng.randint(2, 40)
        user = f"What is the area and perimeter of a rectangle measuring {length} m by {width} m?"
        answer = (
            "For a rectangle, area is length times width and perimeter is the distance all the way round.\n\n"
            f"1. Area: {_times(length, width)} square metres.\n"
            f"2. Perimeter: 2 × ({length} + {width}) = 2 × {length + width} = {2 * (length + width)} m.\n\n"
            f"So the area is {length * width} m² and the perimeter {2 * (length + width)} m. Keep the units apart: "
            "area is in square metres, perimeter in metres."
        )
    elif shape == 1:
        base, height = rng.randint(3, 50), rng.randint(2, 40)
        area = base * height / 2
        user = (
            f"How do I find the area of a triangle with one side {base} cm and a height of {height} cm measured to "
            "that side?"
        )
        answer = (
            "A triangle is half of a parallelogram with the same side and height, so its area is ½ × side × height."
            "\n\n"
            f"1. Side times height: {_times(base, height)}.\n"
            f"2. Halve it: {base * height} ÷ 2 = {_n(area)}.\n\n"
            f"So the area is {_n(area)} cm². The height must be measured at right angles to that side, not along a "
            "sloping edge."
        )
    elif shape == 2:
        radius = rng.randint(2, 30)
        area, circ = math.pi * radius**2, 2 * math.pi * radius
        user = f"What are the area and circumference of a circle with radius {radius} cm?"
        answer = (
            "Both formulas use π (about 3.14159): area = πr² and circumference = 2πr.\n\n"
            f"1. Square the radius: {radius}² = {radius * radius}.\n"
            f"2. Area: π × {radius * radius} ≈ {area:.2f} cm².\n"
            f"3. Circumference: 2 × π × {radius} = {2 * radius}π ≈ {circ:.2f} cm.\n\n"
            f"So the area is about {area:.2f} cm² and the circumference about {circ:.2f} cm. Doubling the radius "
            "would double the circumference but multiply the area by four."
        )
    elif shape == 3:
        a, b, h = rng.randint(3, 30), rng.randint(3, 30), rng.randint(2, 20)
        area = (a + b) * h / 2
        user = f"How do I work out the area of a trapezoid with parallel sides {a} m and {b} m and height {h} m?"
        answer = (
            "The area of a trapezoid is the average of the two parallel sides times the height: ½(a + b)h.\n\n"
            f"1. Add the parallel sides: {a} + {b} = {a + b}.\n"
            f"2. Multiply by the height: {_times(a + b, h)}.\n"
            f"3. Halve: {(a + b) * h} ÷ 2 = {_n(area)}.\n\n"
            f"So the area is {_n(area)} m². Two copies of the shape, one flipped, make a parallelogram of width "
            "a + b, which is why the formula halves."
        )
    else:
        w1, h1 = rng.randint(8, 30), rng.randint(8, 30)
        w2, h2 = rng.randint(2, w1 - 2), rng.randint(2, h1 - 2)
        area = w1 * h1 - w2 * h2
        user = (
            f"An L-shaped plot is a {w1} m by {h1} m rectangle with a {w2} m by {h2} m rectangle cut out of one "
            "corner. What is its area?"
        )
        answer = (
            "The neatest route is to take the whole rectangle and subtract the missing corner.\n\n"
            f"1. Whole rectangle: {_times(w1, h1)} m².\n"
            f"2. Missing corner: {_times(w2, h2)} m².\n"
            f"3. Difference: {w1 * h1} - {w2 * h2} = {area} m².\n\n"
            f"So the plot covers {area} m². Splitting the L into two rectangles and adding them gives the same result,"
            " which makes a good check."
        )
    return user, answer


def _ratio(rng: random.Random) -> tuple[str, str]:
    parts = [rng.randint(1, 9) for _ in range(rng.choice([2, 3]))]
    unit = rng.randint(3, 60)
    total = sum(parts) * unit
    ratio = ":".join(map(str, parts))
    shares = [p * unit for p in parts]
    user = rng.choice([f"How do I split {total} in the ratio {ratio}?", f"Divide {total} in the ratio {ratio}."])
    answer = (
        "A ratio says how many equal parts each portion gets, so find the size of one part first.\n\n"
        f"1. Total parts: {' + '.join(map(str, parts))} = {sum(parts)}.\n"
        f"2. One part: {total} ÷ {sum(parts)} = {unit}.\n"
        f"3. Portions: " + ", ".join(f"{p} × {unit} = {s}" for p, s in zip(parts, shares, strict=True)) + ".\n\n"
        f"So the portions are {', '.join(map(str, shares))}. Check: {' + '.join(map(str, shares))} = {sum(shares)}, "
        "the amount we started with."
    )
    return user, answer


def _speed(rng: random.Random) -> tuple[str, str]:
    who = rng.choice(["a cyclist", "a van", "a ferry", "a tram", "a lorry"])
    hours, minutes = rng.randint(1, 5), rng.choice([15, 20, 30, 40, 45])
    time_h = hours + minutes / 60
    if rng.random() < 0.5:
        distance = rng.randint(12, 400)
        speed = distance / time_h
        user = f"If {who} covers {distance} km in {hours} h {minutes} min, what is its average speed?"
        answer = (
            "Average speed is distance divided by time, with the time in hours for km/h.\n\n"
            f"1. Convert the time: {minutes} min = {minutes} ÷ 60 = {_n(minutes / 60, 4)} h, so the time is "
            f"{_n(time_h, 4)} h.\n"
            f"2. Divide: {distance} ÷ {_n(time_h, 4)} ≈ {speed:.2f}.\n\n"
            f"So the average speed is about {speed:.1f} km/h. Treating {hours} h {minutes} min as {hours}.{minutes} h "
            "is the usual mistake: minutes are sixtieths of an hour, not hundredths."
        )
    else:
        speed = rng.randint(12, 110)
        distance = speed * time_h
        user = f"How far does {who} travel in {hours} h {minutes} min at a steady {speed} km/h?"
        answer = (
            "Distance is speed multiplied by time, once the time is in hours.\n\n"
            f"1. Convert the time: {minutes} min = {_n(minutes / 60, 4)} h, so the total is {_n(time_h, 4)} h.\n"
            f"2. Multiply: {speed} × {_n(time_h, 4)} = {_n(distance, 2)}.\n\n"
            f"So it travels about {_n(distance, 2)} km. A rough check: in {hours + 1} hours it would cover "
            f"{speed * (hours + 1)} km, and the answer is a bit less than that."
        )
    return user, answer


_TRIPLES = ((3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25), (20, 21, 29), (9, 40, 41))


def _pythagoras(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        a, b, c = rng.choice(_TRIPLES)
        k = rng.randint(1, 6)
        a, b, c = a * k, b * k, c * k
        exact = True
    else:
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        c = math.hypot(a, b)
        exact = c == int(c)
    if rng.random() < 0.5:
        user = f"A right triangle has legs of {a} cm and {b} cm. What is the length of the hypotenuse?"
        answer = (
            "Pythagoras' theorem says that in a right triangle the square on the hypotenuse equals the sum of the "
            "squares on the other two sides: c² = a² + b².\n\n"
            f"1. Square the legs: {a}² = {a * a} and {b}² = {b * b}.\n"
            f"2. Add: {a * a} + {b * b} = {a * a + b * b}.\n"
            f"3. Square root: c = √{a * a + b * b} {'=' if exact else '≈'} {_n(c)}.\n\n"
            f"So the hypotenuse is {'' if exact else 'about '}{_n(c)} cm. It must be longer than either leg, and it is."
        )
    else:
        hyp, foot = (c, a) if exact else (rng.randint(5, 12), rng.randint(1, 4))
        height = math.sqrt(hyp * hyp - foot * foot)
        user = (
            f"A {_n(hyp)} m ladder leans against a vertical wall with its foot {_n(foot)} m from the wall. How high up "
            "the wall does it reach?"
        )
        answer = (
            "The ladder, the wall and the ground form a right triangle with the ladder as the hypotenuse, so "
            "height² = ladder² - distance².\n\n"
            f"1. Square both: {_n(hyp)}² = {_n(hyp * hyp)} and {_n(foot)}² = {_n(foot * foot)}.\n"
            f"2. Subtract: {_n(hyp * hyp)} - {_n(foot * foot)} = {_n(hyp * hyp - foot * foot)}.\n"
            f"3. Square root: √{_n(hyp * hyp - foot * foot)} ≈ {_n(height)}.\n\n"
            f"So the ladder reaches about {_n(height)} m up the wall, a little less than its own length, as expected."
        )
    return user, answer


def _fractions(rng: random.Random) -> tuple[str, str]:
    b = rng.randint(2, 12)
    d = rng.choice([v for v in range(2, 13) if v != b])
    a, c = rng.randint(1, b * 2), rng.randint(1, d * 2)
    plus = rng.random() < 0.6
    lcd = b * d // math.gcd(b, d)
    na, nc = a * (lcd // b), c * (lcd // d)
    top = na + nc if plus else na - nc
    result = Fraction(top, lcd)
    op = "+" if plus else "-"
    user = rng.choice([f"What is {a}/{b} {op} {c}/{d}?", f"How do I work out {a}/{b} {op} {c}/{d}?"])
    simplified = (
        f"Simplify by dividing top and bottom by {math.gcd(abs(top), lcd)}: {result.numerator}/{result.denominator}."
        if math.gcd(abs(top), lcd) > 1
        else "That fraction is already in lowest terms."
    )
    answer = (
        "Fractions can only be added or subtracted once they share a denominator, so find the lowest common one.\n\n"
        f"1. Lowest common denominator of {b} and {d}: {lcd}.\n"
        f"2. Convert: {a}/{b} = {na}/{lcd} and {c}/{d} = {nc}/{lcd}.\n"
        f"3. Combine the numerators: {na} {op} {nc} = {top}, giving {top}/{lcd}.\n"
        f"4. {simplified}\n\n"
        f"So {a}/{b} {op} {c}/{d} = {result.numerator}"
        + (f"/{result.denominator}" if result.denominator != 1 else "")
        + f", which is about {_n(float(result), 3)} as a decimal."
    )
    return user, answer


def _simultaneous(rng: random.Random) -> tuple[str, str]:
    while True:
        a1, b1, a2, b2 = (rng.randint(1, 7) for _ in range(4))
        if a1 * b2 - a2 * b1:
            break
    x, y = rng.randint(-6, 12), rng.randint(-6, 12)
    c1, c2 = a1 * x + b1 * y, a2 * x + b2 * y
    e1, e2 = f"{_term(a1, 'x')} + {_term(b1, 'y')} = {c1}", f"{_term(a2, 'x')} + {_term(b2, 'y')} = {c2}"
    user = rng.choice([f"Can you solve the system {e1} and {e2}?", f"Solve for x and y: {e1}, {e2}."])
    coef_y, rhs = b1 * a2 - b2 * a1, c1 * a2 - c2 * a1
    answer = (
        "Eliminate x by making its coefficient the same in both equations, then subtract.\n\n"
        f"1. Multiply the first equation by {a2}: {a1 * a2}x + {b1 * a2}y = {c1 * a2}.\n"
        f"2. Multiply the second by {a1}: {a1 * a2}x + {b2 * a1}y = {c2 * a1}.\n"
        f"3. Subtract: ({b1 * a2} - {b2 * a1})y = {c1 * a2} - {_paren(c2 * a1)}, so {coef_y}y = {rhs} and "
        f"y = {rhs} ÷ {_paren(coef_y)} = {y}.\n"
        f"4. Substitute into the first equation: {_term(a1, 'x')} + {b1} × {_paren(y)} = {c1}, so "
        + (f"{a1}x = {c1 - b1 * y} and x = {c1 - b1 * y} ÷ {a1} = {x}.\n\n" if a1 != 1 else f"x = {x}.\n\n")
        + f"Check with the second equation: {a2} × {_paren(x)} + {b2} × {_paren(y)} = {c2}. So x = {x} and y = {y}."
    )
    return user, answer


def _probability(rng: random.Random) -> tuple[str, str]:
    red, blue, green = rng.randint(2, 12), rng.randint(2, 12), rng.randint(1, 10)
    total = red + blue + green
    if rng.random() < 0.5:
        p = Fraction(blue, total)
        user = (
            f"A jar holds {red} red, {blue} blue and {green} green marbles. What is the probability that one marble "
            "drawn at random is blue?"
        )
        answer = (
            "When every outcome is equally likely, probability = favourable outcomes ÷ all outcomes.\n\n"
            f"1. All outcomes: {red} + {blue} + {green} = {total} marbles.\n"
            f"2. Favourable: {blue} blue marbles.\n"
            f"3. Probability: {blue}/{total}"
            + (f" = {p.numerator}/{p.denominator}" if p.denominator != total else "")
            + f" ≈ {_n(float(p), 3)}.\n\n"
            f"So the chance is about {_n(float(p) * 100, 1)}%. The chance of not blue is 1 minus that, "
            f"{_n(100 - float(p) * 100, 1)}%."
        )
    else:
        p = Fraction(red, total) * Fraction(red - 1, total - 1)
        user = (
            f"A jar holds {red} red, {blue} blue and {green} green marbles. Two are drawn without putting the first "
            "back. What is the probability that both are red?"
        )
        answer = (
            "Without replacement, the second draw depends on the first, so multiply the two probabilities in turn.\n\n"
            f"1. First red: {red}/{total}.\n"
            f"2. Second red, given the first was red: {red - 1}/{total - 1}, since one red marble is gone.\n"
            f"3. Multiply: {red}/{total} × {red - 1}/{total - 1} = {red * (red - 1)}/{total * (total - 1)}"
            + (f" = {p.numerator}/{p.denominator}" if p.denominator != total * (total - 1) else "")
            + f" ≈ {_n(float(p), 4)}.\n\n"
            f"So the chance is about {_n(float(p) * 100, 2)}%. With replacement it would be "
            f"({red}/{total})² ≈ {_n(float(Fraction(red, total) ** 2) * 100, 2)}%, slightly higher."
        )
    return user, answer


_MATHS_FAMILIES: tuple[Callable[[random.Random], tuple[str, str]], ...] = (
    _linear,
    _linear_both,
    _arithmetic,
    _word_problem,
    _percent,
    _units,
    _statistics,
    _compound,
    _area,
    _ratio,
    _speed,
    _pythagoras,
    _fractions,
    _simultaneous,
    _probability,
)
