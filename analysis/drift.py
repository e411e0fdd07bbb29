"""Drift metrics from the store alone: turnover, causes, half-life, divergence, life events.

Every function takes a DuckDB connection (a read-only one is enough) and a ``run_id`` and returns a
pandas DataFrame, so a notebook gets the same numbers as a report. Exact definitions are in
docs/analysis.md; the short version is in each docstring.

Time is simulated time. A "month" is 30 simulated days counted from the run's first session start
(``sessions.started_at``), the unit the drift rates of ``personas/drift.py`` are expressed in.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

__all__ = [
    "MONTH",
    "drift_by_cause",
    "js_divergence",
    "life_event_share",
    "preference_half_life",
    "turnover_by_month",
]

MONTH = timedelta(days=30)
ALL = "all"


# ------------------------------------------------------------------------------------ loading


def _run_span(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[datetime, datetime]:
    row = con.execute(
        "SELECT min(started_at), max(ended_at) FROM sessions WHERE run_id = ?", [run_id]
    ).fetchone()
    if row is None or row[0] is None:
        raise ValueError(f"run {run_id!r} has no sessions in this store; check the run id (SELECT run_id FROM runs)")
    return row[0], row[1]


def _user_spans(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """persona_id, first (first session start), last (last session end)."""
    return con.execute(
        "SELECT persona_id, min(started_at) AS first, max(ended_at) AS last FROM sessions"
        " WHERE run_id = ? GROUP BY persona_id ORDER BY persona_id",
        [run_id],
    ).df()


def _events(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    return con.execute(
        "SELECT e.event_id, e.persona_id, e.time, e.kind, e.cause, e.topic, e.old_preference_id,"
        " e.new_preference_id, o.option AS old_option, o.polarity AS old_polarity,"
        " n.option AS new_option, n.polarity AS new_polarity"
        " FROM drift_events e"
        " LEFT JOIN preferences o ON o.run_id = e.run_id AND o.preference_id = e.old_preference_id"
        " LEFT JOIN preferences n ON n.run_id = e.run_id AND n.preference_id = e.new_preference_id"
        " WHERE e.run_id = ? ORDER BY e.persona_id, e.time, e.event_id",
        [run_id],
    ).df()


def _preferences(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    return con.execute(
        "SELECT preference_id, persona_id, domain, topic, option, polarity, strength, valid_from, valid_to"
        " FROM preferences WHERE run_id = ? AND owner = 'self' ORDER BY persona_id, valid_from, preference_id",
        [run_id],
    ).df()


def _event_type(events: pd.DataFrame) -> pd.Series:
    """``replaced`` (old and new), ``dropped`` (old only) or ``adopted`` (new only)."""
    old = events["old_preference_id"].notna()
    new = events["new_preference_id"].notna()
    return pd.Series(np.where(old & new, "replaced", np.where(old, "dropped", "adopted")), index=events.index)


def _held_at(prefs: pd.DataFrame, t: datetime) -> pd.Series:
    """Mask of the preferences held at ``t``: valid_from <= t < valid_to (NULL: still held)."""
    return (prefs["valid_from"] <= t) & (prefs["valid_to"].isna() | (prefs["valid_to"] > t))


# ----------------------------------------------------------------------------------- turnover


def turnover_by_month(con: duckdb.DuckDBPyConnection, run_id: str, per_user: bool = False) -> pd.DataFrame:
    """Drift events per simulated 30-day month.

    Month ``m`` covers ``[start + 30 m days, start + 30 (m + 1) days)`` where ``start`` is the run's
    first session start. A user is *active* in a month when the span from their first session start
    to their last session end overlaps it. Events are split into ``replaced`` (an old preference
    closed and a new one opened, including strength changes of gradual drift), ``dropped`` (closed,
    nothing opened) and ``adopted`` (opened, nothing closed). ``held_at_start`` counts the
    preferences the active users hold at the month's start, and
    ``turnover = (replaced + dropped) / held_at_start``: the share of held preferences that ended
    during the month.

    Population (default): one row per month with ``month, month_start, users_active, events,
    replaced, dropped, adopted, held_at_start, events_per_user, turnover``. ``per_user=True``: one
    row per (persona_id, month) the user is active in, with the same counts (no ``users_active``,
    ``events_per_user``).
    """
    start, end = _run_span(con, run_id)
    spans = _user_spans(con, run_id)
    events = _events(con, run_id)
    prefs = _preferences(con, run_id)
    n_months = max(1, math.ceil((end - start) / MONTH))
    events["type"] = _event_type(events)
    events["month"] = ((events["time"] - start) // MONTH).astype(int).clip(lower=0, upper=n_months - 1)

    rows = []
    for m in range(n_months):
        m_start, m_end = start + m * MONTH, start + (m + 1) * MONTH
        held = prefs[_held_at(prefs, m_start)].groupby("persona_id").size()
        month_events = events[events["month"] == m]
        counts = month_events.groupby(["persona_id", "type"]).size().unstack(fill_value=0)
        active = spans[(spans["first"] < m_end) & (spans["last"] >= m_start)]["persona_id"]
        for persona in active:
            c = counts.loc[persona] if persona in counts.index else pd.Series(dtype=int)
            rows.append({
                "persona_id": persona, "month": m, "month_start": m_start,
                "replaced": int(c.get("replaced", 0)), "dropped": int(c.get("dropped", 0)),
                "adopted": int(c.get("adopted", 0)), "held_at_start": int(held.get(persona, 0)),
            })
    users = pd.DataFrame(rows, columns=["persona_id", "month", "month_start", "replaced", "dropped", "adopted",
                                        "held_at_start"])
    users["events"] = users["replaced"] + users["dropped"] + users["adopted"]
    if per_user:
        users["turnover"] = _ratio(users["replaced"] + users["dropped"], users["held_at_start"])
        return users[["persona_id", "month", "month_start", "events", "replaced", "dropped", "adopted",
                      "held_at_start", "turnover"]].reset_index(drop=True)
    population = (
        users.groupby(["month", "month_start"], as_index=False)
        .agg(users_active=("persona_id", "nunique"), events=("events", "sum"), replaced=("replaced", "sum"),
             dropped=("dropped", "sum"), adopted=("adopted", "sum"), held_at_start=("held_at_start", "sum"))
    )
    population["events_per_user"] = _ratio(population["events"], population["users_active"])
    population["turnover"] = _ratio(population["replaced"] + population["dropped"], population["held_at_start"])
    return population.reset_index(drop=True)


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    num = numerator.astype(float)
    den = denominator.astype(float)
    return (num / den.where(den > 0)).astype(float)


# ------------------------------------------------------------------------------------- causes


def drift_by_cause(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Drift events by drift model (``kind``) and ``cause``.

    One row per (kind, cause) with ``events``, ``users`` (distinct personas), ``share`` (of all
    the run's events) and ``share_of_kind`` (of the events of that kind), sorted by kind then by
    decreasing count. Kinds are the drift models of personas/drift.py: topic_swap, life_event,
    gradual, reversal, seasonal, exposure.
    """
    table = con.execute(
        "SELECT kind, cause, count(*) AS events, count(DISTINCT persona_id) AS users FROM drift_events"
        " WHERE run_id = ? GROUP BY kind, cause",
        [run_id],
    ).df()
    columns = ["kind", "cause", "events", "users", "share", "share_of_kind"]
    if table.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("kind", "cause") else float) for c in columns})
    table["share"] = table["events"] / table["events"].sum()
    table["share_of_kind"] = table["events"] / table.groupby("kind")["events"].transform("sum")
    table = table.sort_values(["kind", "events", "cause"], ascending=[True, False, True], ignore_index=True)
    return table[columns]


# ---------------------------------------------------------------------------------- half-life


def _spells(prefs: pd.DataFrame) -> pd.DataFrame:
    """Holding spells of a preference key (persona, topic, option, polarity): versions that follow
    each other without a gap (a gradual-drift strength change) are one spell."""
    rows = []
    for (persona, topic, option, polarity), group in prefs.groupby(
        ["persona_id", "topic", "option", "polarity"], sort=False
    ):
        group = group.sort_values("valid_from")
        spell_start, spell_end, domain = None, None, group["domain"].iloc[0]
        for valid_from, valid_to in zip(group["valid_from"], group["valid_to"], strict=True):
            valid_to = None if pd.isna(valid_to) else valid_to
            if spell_start is not None and spell_end is not None and valid_from == spell_end:
                spell_end = valid_to
                continue
            if spell_start is not None:
                rows.append((persona, domain, topic, option, polarity, spell_start, spell_end))
            spell_start, spell_end = valid_from, valid_to
        rows.append((persona, domain, topic, option, polarity, spell_start, spell_end))
    return pd.DataFrame(rows, columns=["persona_id", "domain", "topic", "option", "polarity", "start", "end"])


def preference_half_life(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Half-life of a held preference under a constant-hazard (exponential) model, by domain.

    A *spell* is an uninterrupted holding of one preference (persona, topic, option, polarity);
    consecutive versions that only changed strength are merged. Each spell is observed from
    ``valid_from`` to the earlier of ``valid_to`` and the censoring time, the user's last session
    end (drift is only simulated between sessions). A spell *ended* when ``valid_to`` is set and not
    after the censoring time. The exponential maximum-likelihood estimate with right censoring is
    ``rate = ended / exposure`` and ``half_life = ln 2 * exposure / ended`` (infinite when nothing
    ended). ``ci_low``/``ci_high`` are the exact 95% chi-square interval of the half-life
    (``2 * exposure * rate`` is chi-square with ``2 * ended`` degrees of freedom), NaN without
    scipy or without an ended spell.

    One row per domain and a final ``domain == "all"`` row: ``domain, spells, ended,
    exposure_days, rate_per_month, half_life_days, ci_low, ci_high``.
    """
    prefs = _preferences(con, run_id)
    spans = _user_spans(con, run_id)
    _, run_end = _run_span(con, run_id)
    spells = _spells(prefs)
    censor = spells["persona_id"].map(dict(zip(spans["persona_id"], spans["last"], strict=True))).fillna(run_end)
    censor = pd.to_datetime(censor)
    ended = spells["end"].notna() & (pd.to_datetime(spells["end"]) <= censor)
    stop = pd.to_datetime(spells["end"]).where(ended, censor)
    spells["exposure_days"] = ((stop - pd.to_datetime(spells["start"])) / timedelta(days=1)).clip(lower=0)
    spells["ended"] = ended.astype(int)

    rows = [_half_life_row(domain, group) for domain, group in spells.groupby("domain", sort=True)]
    rows.append(_half_life_row(ALL, spells))
    return pd.DataFrame(rows, columns=["domain", "spells", "ended", "exposure_days", "rate_per_month",
                                       "half_life_days", "ci_low", "ci_high"])


def _half_life_row(domain: str, spells: pd.DataFrame) -> dict[str, object]:
    ended = int(spells["ended"].sum())
    exposure = float(spells["exposure_days"].sum())
    rate = ended / exposure if exposure > 0 else math.nan
    half_life = (math.log(2) * exposure / ended) if ended else math.inf
    ci_low = ci_high = math.nan
    if ended:
        try:
            from scipy.stats import chi2

            # rate interval: chi2(alpha/2, 2d) / 2T .. chi2(1-alpha/2, 2d+2) / 2T; half-life = ln2 / rate
            rate_low = chi2.ppf(0.025, 2 * ended) / (2 * exposure)
            rate_high = chi2.ppf(0.975, 2 * ended + 2) / (2 * exposure)
            ci_low, ci_high = math.log(2) / rate_high, math.log(2) / rate_low
        except ImportError:  # pragma: no cover - scipy is optional
            pass
    return {
        "domain": domain, "spells": int(len(spells)), "ended": ended, "exposure_days": exposure,
        "rate_per_month": rate * 30 if exposure > 0 else math.nan, "half_life_days": half_life,
        "ci_low": ci_low, "ci_high": ci_high,
    }


# ------------------------------------------------------------------------------ JS divergence


def _distribution(prefs: pd.DataFrame, t: datetime) -> dict[tuple[str, str], float]:
    """Liked (topic, option) held at t, weighted by strength, normalised to sum 1 (empty if none)."""
    held = prefs[_held_at(prefs, t) & (prefs["polarity"] == "likes")]
    weights = held.groupby(["topic", "option"])["strength"].sum()
    weights = weights[weights > 0]
    total = float(weights.sum())
    return {key: float(w) / total for key, w in weights.items()} if total > 0 else {}


def jensen_shannon(p: dict[object, float], q: dict[object, float]) -> float:
    """Jensen–Shannon divergence in bits (base 2): 0 for equal distributions, 1 for disjoint ones."""
    if not p or not q:
        return math.nan
    keys = sorted(set(p) | set(q), key=repr)
    a = np.array([p.get(k, 0.0) for k in keys])
    b = np.array([q.get(k, 0.0) for k in keys])
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return max(0.0, min(1.0, 0.5 * kl(a) + 0.5 * kl(b)))


def js_divergence(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    delta_days: float = 30,
    step_days: float = 30,
    per_user: bool = False,
) -> pd.DataFrame:
    """Jensen–Shannon divergence (base 2, in [0, 1]) between a user's preferences at t and t + Δ.

    A user's distribution at t is over (topic, option) pairs they *like* at t, each weighted by its
    strength and normalised to sum to 1 (dislikes are left out: they are not a share of what the
    user wants). t runs over ``start, start + step, ...`` while ``t + Δ`` is not after the run's
    last session end; a (user, t) pair is used when ``t + Δ`` is not after the user's last session
    end and the user likes something at both times (preferences exist from the persona's creation,
    before its first session).

    Population (default): one row per t with ``t, t_plus, users, mean_js, median_js``.
    ``per_user=True``: one row per (persona_id, t) with ``persona_id, t, t_plus, js``.
    """
    if delta_days <= 0 or step_days <= 0:
        raise ValueError("delta_days and step_days must be positive")
    start, end = _run_span(con, run_id)
    spans = _user_spans(con, run_id)
    prefs = _preferences(con, run_id)
    delta, step = timedelta(days=delta_days), timedelta(days=step_days)
    by_user = {persona: group for persona, group in prefs.groupby("persona_id")}
    rows = []
    t = start
    while t + delta <= end:
        for persona, last in zip(spans["persona_id"], spans["last"], strict=True):
            if t + delta > last or persona not in by_user:
                continue
            js = jensen_shannon(_distribution(by_user[persona], t), _distribution(by_user[persona], t + delta))
            if not math.isnan(js):
                rows.append({"persona_id": persona, "t": t, "t_plus": t + delta, "js": js})
        t += step
    users = pd.DataFrame(rows, columns=["persona_id", "t", "t_plus", "js"])
    if per_user:
        return users
    return (
        users.groupby(["t", "t_plus"], as_index=False)
        .agg(users=("persona_id", "nunique"), mean_js=("js", "mean"), median_js=("js", "median"))
        .reset_index(drop=True)
    )


# -------------------------------------------------------------------------------- life events


def life_event_share(con: duckdb.DuckDBPyConnection, run_id: str, per_user: bool = False) -> pd.DataFrame:
    """How much of the drift life events explain (kind ``life_event``, knock-on changes included).

    ``events``/``life_events``/``event_share``: all drift events, those of kind life_event, and
    their ratio. ``changed_preferences``: distinct preferences (topic, option, polarity) that any
    event ended or started; ``life_changed``: those a life event ended or started;
    ``preference_share`` their ratio. Overall (default): one row; ``per_user=True``: one row per
    persona that has a session (users without drift have zeros and NaN shares).
    """
    events = _events(con, run_id)
    changed: list[tuple[str, str, tuple[str, str, str], bool]] = []
    for row in events.itertuples(index=False):
        life = row.kind == "life_event"
        if isinstance(row.old_option, str):
            changed.append((row.persona_id, row.event_id, (row.topic, row.old_option, row.old_polarity), life))
        if isinstance(row.new_option, str):
            changed.append((row.persona_id, row.event_id, (row.topic, row.new_option, row.new_polarity), life))
    keys = pd.DataFrame(changed, columns=["persona_id", "event_id", "key", "life"])
    key_life = keys.groupby(["persona_id", "key"])["life"].any().reset_index()

    def row_for(ev: pd.DataFrame, kl: pd.DataFrame) -> dict[str, float]:
        n, life = len(ev), int((ev["kind"] == "life_event").sum())
        c, lc = len(kl), int(kl["life"].sum())
        return {"events": n, "life_events": life, "event_share": life / n if n else math.nan,
                "changed_preferences": c, "life_changed": lc, "preference_share": lc / c if c else math.nan}

    if not per_user:
        return pd.DataFrame([row_for(events, key_life)])
    personas = _user_spans(con, run_id)["persona_id"]
    rows = [
        {"persona_id": p, **row_for(events[events["persona_id"] == p], key_life[key_life["persona_id"] == p])}
        for p in personas
    ]
    return pd.DataFrame(rows, columns=["persona_id", "events", "life_events", "event_share", "changed_preferences",
                                       "life_changed", "preference_share"])
