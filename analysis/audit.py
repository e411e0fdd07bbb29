"""Artifact audit: how well can a reader score on a benchmark without any memory at all?

A personalisation benchmark is only worth its accuracy numbers if a reader that never sees the
user's history cannot score well. PersonaMem-v2's published rows, for instance, put the correct
option as the longest in about 45% of rows (chance 25%). This module measures such artifacts on
any stored run (generated or loaded from PersonaMem-v2), per question type and overall:

- option length: how often the correct option is strictly the longest / strictly the shortest,
  and its mean length relative to the other options;
- blind readers, which never see memory or history: ``longest`` (picks the longest option),
  ``query_only`` (embedding similarity of the user query alone to each option) and
  ``persona_prior`` (similarity of the user's demographic profile alone to each option, the
  stereotype baseline).

Every blind reader is scored by its *expected* accuracy with ties broken uniformly at random: a
question where the correct option is one of ``k`` options tied for the best score earns ``1/k``.
That makes each figure independent of option order, and exactly chance when a reader cannot tell
the options apart (equal lengths; no profile). The exact definitions are in docs/benchmark.md.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from personasim.analysis.profiles import load_profiles
from personasim.analysis.questions import QUESTION_TYPES
from personasim.analysis.stored_questions import StoredQuestions
from personasim.sim.rows import QuestionRow
from personasim.sim.store import open_store
from personasim.sim.store_read import question_users
from personasim.sim.store_runs import resolve_finished_run, run_embedder

BLIND_READERS = ("longest", "query_only", "persona_prior")

#: A share of correct-longest (or correct-shortest) questions this far above chance is flagged.
LENGTH_FLAG_MARGIN = 0.05
#: A blind reader's accuracy this far above chance is flagged.
BLIND_FLAG_MARGIN = 0.08
#: Scores equal to this many decimals are ties (cosines of identical texts differ in the last bits).
SCORE_DECIMALS = 6


class TextEncoder(Protocol):
    """What the embedding readers need: unit-norm rows, one per text (``Embedder`` satisfies it)."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class BlindAccuracy(BaseModel):
    """Expected accuracy of each blind reader (ties broken uniformly at random)."""

    longest: float
    query_only: float
    persona_prior: float


class AuditFigures(BaseModel):
    """The audit's figures for one group of questions (one type, or all of them)."""

    questions: int
    chance: float = Field(description="Mean of 1/len(options).")
    correct_longest_share: float = Field(description="Share of questions whose correct option is strictly longest.")
    correct_shortest_share: float = Field(description="Share whose correct option is strictly shortest.")
    length_ratio: float | None = Field(
        description="Mean over questions of len(correct) / mean len(other options), in characters."
    )
    blind_accuracy: BlindAccuracy


class AuditReport(AuditFigures):
    """The audit of one run: figures over all questions, per question type, and plain-language flags."""

    run_id: str
    questions_without_profile: int = Field(
        description="Questions whose user has no demographic profile: persona_prior answers them at chance."
    )
    by_type: dict[str, AuditFigures]
    flags: list[str] = Field(description="Figures above chance by more than the flag margins, naming the group.")


class QuestionAudit(BaseModel):
    """One question's audit: its length facts and each blind reader's credit (0, 1, or 1/k on a k-way tie)."""

    question_id: str
    question_type: str
    n_options: int
    correct_longest: bool
    correct_shortest: bool
    length_ratio: float | None
    credit: dict[str, float]


# -- per question --------------------------------------------------------------------------------

def tie_credit(scores: Sequence[float], correct_index: int) -> float:
    """Expected credit of picking the top score with ties broken at random: 1/k if the correct
    option is one of the k best (equal to ``SCORE_DECIMALS`` decimals), else 0."""
    rounded = [round(float(s), SCORE_DECIMALS) for s in scores]
    best = max(rounded)
    tied = [i for i, s in enumerate(rounded) if s == best]
    return 1.0 / len(tied) if correct_index in tied else 0.0


def length_facts(options: Sequence[str], correct_index: int) -> tuple[bool, bool, float | None]:
    """(strictly longest, strictly shortest, len(correct) / mean len(others)) in characters.

    A tie with another option is neither longest nor shortest. The ratio is None when there are
    no other options or they are all empty (it would be undefined)."""
    lengths = [len(o) for o in options]
    mine = lengths[correct_index]
    others = lengths[:correct_index] + lengths[correct_index + 1:]
    longest = all(mine > n for n in others)
    shortest = all(mine < n for n in others)
    mean_other = sum(others) / len(others) if others else 0.0
    return longest, shortest, (mine / mean_other if mean_other > 0 else None)


def audit_questions(
    questions: Sequence[QuestionRow], profiles: Mapping[str, str | None], embedder: TextEncoder
) -> list[QuestionAudit]:
    """Audit each question: length facts and the three blind readers' credit.

    All texts are embedded once, in three batches, so a run of thousands of questions costs
    one pass of the embedder over its distinct options."""
    option_texts = list(dict.fromkeys(o for q in questions for o in q.options))
    option_vec = dict(zip(option_texts, embedder.encode(option_texts), strict=True))
    queries = list(dict.fromkeys(q.query for q in questions))
    query_vec = dict(zip(queries, embedder.encode(queries), strict=True))
    known = sorted({p for p in profiles.values() if p})
    profile_vec = dict(zip(known, embedder.encode(known), strict=True)) if known else {}
    audited = []
    for q in questions:
        longest, shortest, ratio = length_facts(q.options, q.correct_index)
        opts = np.stack([option_vec[o] for o in q.options])
        profile = profiles.get(q.persona_id)
        prior = opts @ profile_vec[profile] if profile else np.zeros(len(q.options))  # no profile: all tied
        credit = {
            "longest": tie_credit([len(o) for o in q.options], q.correct_index),
            "query_only": tie_credit(opts @ query_vec[q.query], q.correct_index),
            "persona_prior": tie_credit(prior, q.correct_index),
        }
        audited.append(QuestionAudit(
            question_id=q.question_id, question_type=q.question_type, n_options=len(q.options),
            correct_longest=longest, correct_shortest=shortest, length_ratio=ratio, credit=credit,
        ))
    return audited


def audit_users(
    users: Sequence[Sequence[QuestionRow]], profiles: Mapping[str, str | None], embedder: TextEncoder
) -> list[QuestionAudit]:
    """``audit_questions`` of a few users' questions, embedding only their own profiles: a chunk of
    a large run's users would otherwise embed every user's profile again. The audits are the
    same as the whole run's (a text's vector does not depend on its batch)."""
    flat = [q for user in users for q in user]
    return audit_questions(flat, {q.persona_id: profiles.get(q.persona_id) for q in flat}, embedder)


# -- summaries -----------------------------------------------------------------------------------

class AuditTally:
    """Many questions' audits held as columns, about 200 bytes a question (its id included) where a
    ``QuestionAudit`` takes 1.4 KB: what an evaluation of a 10,000-user run (400,000 questions)
    gathers before it summarises, 80 MB instead of 560. A question audited twice (a retried task) counts once, the
    latest audit kept; the figures are summed in question id order, as over the sorted list."""

    def __init__(self, items: Iterable[QuestionAudit] = ()) -> None:
        self._row: dict[str, int] = {}  # question id -> its row (the latest audit of it)
        self._type_names: list[str] = []
        self._type_codes: dict[str, int] = {}
        self._type = array("H")
        self._n_options = array("H")
        self._longest = array("b")
        self._shortest = array("b")
        self._ratio = array("d")  # NaN: no ratio
        self._credit = {reader: array("d") for reader in BLIND_READERS}
        self.add(items)

    def add(self, items: Iterable[QuestionAudit]) -> None:
        for item in items:
            code = self._type_codes.setdefault(item.question_type, len(self._type_names))
            if code == len(self._type_names):
                self._type_names.append(item.question_type)
            self._row[item.question_id] = len(self._type)
            self._type.append(code)
            self._n_options.append(item.n_options)
            self._longest.append(item.correct_longest)
            self._shortest.append(item.correct_shortest)
            self._ratio.append(math.nan if item.length_ratio is None else item.length_ratio)
            for reader, column in self._credit.items():
                column.append(item.credit[reader])

    def __len__(self) -> int:
        return len(self._row)

    def _rows(self) -> list[int]:
        """Each question's row, in question id order."""
        return [self._row[key] for key in sorted(self._row)]

    def _figures(self, rows: list[int]) -> AuditFigures:
        n = len(rows)
        ratios = [r for r in (self._ratio[i] for i in rows) if not math.isnan(r)]
        return AuditFigures(
            questions=n,
            chance=sum(1.0 / self._n_options[i] for i in rows) / n,
            correct_longest_share=sum(bool(self._longest[i]) for i in rows) / n,
            correct_shortest_share=sum(bool(self._shortest[i]) for i in rows) / n,
            length_ratio=sum(ratios) / len(ratios) if ratios else None,
            blind_accuracy=BlindAccuracy(**{r: sum(column[i] for i in rows) / n for r, column in self._credit.items()}),
        )

    def figures(self) -> AuditFigures:
        """The figures over every question held (at least one)."""
        return self._figures(self._rows())

    def figures_by_type(self) -> dict[str, AuditFigures]:
        """The figures per question type, in the documented order of types."""
        rows = self._rows()
        by_code: dict[int, list[int]] = {}
        for i in rows:
            by_code.setdefault(self._type[i], []).append(i)
        named = {self._type_names[code]: group for code, group in by_code.items()}
        return {t: self._figures(named[t]) for t in _type_order(set(named))}


def figures(items: Sequence[QuestionAudit]) -> AuditFigures:
    """The audit's figures over a group of audited questions (at least one), summed in their order."""
    tally = AuditTally(items)
    return tally._figures(list(range(len(items))))


def _type_order(types: set[str]) -> list[str]:
    """Our question types in their documented order, then any others (e.g. ``others_preference``)."""
    return [t for t in QUESTION_TYPES if t in types] + sorted(types - set(QUESTION_TYPES))


def _flags_for(scope: str, f: AuditFigures) -> list[str]:
    """Plain-language findings for one group: what a memoryless reader can exploit, and by how much."""
    where = f"{scope} (n={f.questions}, chance {f.chance:.1%})"
    found = []
    if f.correct_longest_share > f.chance + LENGTH_FLAG_MARGIN:
        found.append(f"{where}: the correct option is strictly the longest in {f.correct_longest_share:.1%} "
                     "of questions")
    if f.correct_shortest_share > f.chance + LENGTH_FLAG_MARGIN:
        found.append(f"{where}: the correct option is strictly the shortest in {f.correct_shortest_share:.1%} "
                     "of questions")
    blind = f.blind_accuracy.model_dump()
    for reader in BLIND_READERS:
        if blind[reader] > f.chance + BLIND_FLAG_MARGIN:
            found.append(f"{where}: the blind reader {reader} scores {blind[reader]:.1%} without any memory")
    return found


def summarise(run_id: str, items: Sequence[QuestionAudit] | AuditTally, questions_without_profile: int = 0
              ) -> AuditReport:
    """Figures over all questions and per type, and the flags (overall first, then by type).

    The figures are summed in question id order (``AuditTally``), so the report does not depend on
    the order the questions were audited in."""
    tally = items if isinstance(items, AuditTally) else AuditTally(items)
    if not len(tally):
        raise ValueError(f"run {run_id} has no questions to audit")
    overall, by_type = tally.figures(), tally.figures_by_type()
    flags = _flags_for("all questions", overall)
    for t, f in by_type.items():
        flags += _flags_for(t, f)
    return AuditReport(**overall.model_dump(), run_id=run_id, questions_without_profile=questions_without_profile,
                       by_type=by_type, flags=flags)


def audit(con: duckdb.DuckDBPyConnection, run_id: str, embedder: TextEncoder | str | None = None) -> AuditReport:
    """Audit a stored run's questions with the blind readers; reads the store, writes nothing.

    ``embedder`` (a model or its name) defaults to the run's own, the one its embedding reader
    uses (``audit_embedder``). The questions are read and audited a chunk of users at a time
    (``StoredQuestions``), never all held."""
    if not question_users(con, run_id):
        raise ValueError(
            f"run {run_id} has no questions; generate them with `personasim eval --run {run_id}` "
            "(it generates a run's questions when it has none), then audit again"
        )
    embedder = audit_embedder(con, run_id, embedder)
    profiles = load_profiles(con, run_id)
    audited = AuditTally()
    missing = 0
    for chunk in StoredQuestions(con, run_id).by_user():
        audited.add(audit_users(chunk, profiles, embedder))
        missing += sum(len(user) for user in chunk if not profiles.get(user[0].persona_id))
    return summarise(run_id, audited, missing)


def audit_store(db: str | Path, run_id: str | None = None, embedder: TextEncoder | str | None = None) -> AuditReport:
    """``personasim audit`` as a function: audit a run of the store at ``db`` (the store's only run
    unless ``run_id`` names one). The store is opened read-only: the audit writes nothing.

    The blind readers embed with the run's own embedder (``RunConfig.embedder``), as ``personasim
    eval``'s reader does by default, so ``query_only`` is what that reader answers with the
    ``none`` strategy; ``embedder`` names another (``minilm``, ``minilm-bf16``, ``minilm-static``)
    or is one."""
    with open_store(db) as store:
        run_id = resolve_finished_run(store, run_id)
        return audit(store.con, run_id, embedder)


def audit_embedder(source: Any, run_id: str, embedder: TextEncoder | str | None = None) -> TextEncoder:
    """The blind readers' embedder: ``embedder`` itself, the one it names, or the run's own
    (``RunConfig.embedder``), without changing the process's (``embedding.embedder_named``)."""
    if embedder is not None and not isinstance(embedder, str):
        return embedder
    from personasim.agents.embedding import EMBEDDER_NAMES, embedder_named
    from personasim.analysis.static_build import prepare_embedder

    name = embedder or run_embedder(source, run_id)
    if name not in EMBEDDER_NAMES:  # before anything is built
        raise ValueError(f"unknown embedder {name!r}; choose from {', '.join(EMBEDDER_NAMES)}")
    prepare_embedder(name)
    return embedder_named(name)


def audit_table(report: AuditReport) -> pd.DataFrame:
    """One row per question type plus ``all``: the report's figures flattened, for notebooks and reports."""
    rows = []
    for name, f in [*report.by_type.items(), ("all", report)]:
        rows.append({
            "question_type": name, "questions": f.questions, "chance": f.chance,
            "correct_longest_share": f.correct_longest_share, "correct_shortest_share": f.correct_shortest_share,
            "length_ratio": f.length_ratio, **{r: getattr(f.blind_accuracy, r) for r in BLIND_READERS},
        })
    return pd.DataFrame(rows)
