"""Which questions a run's benchmark asks: part of the run config, so a run's questions are
reproducible from its ``runs`` row (``analysis/questions.py`` generates them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

QUESTION_TYPES = (
    "explicit_recall",
    "implicit_inference",
    "updated_preference",
    "generalisation",
    "sensitive_info",
    "forget_compliance",
    "abstention",
    "others_preference",
)


class QuestionConfig(BaseModel):
    """Which questions to ask. Per-user counts bound the types that could otherwise ask about everything."""

    model_config = ConfigDict(extra="forbid")

    types: list[str] = Field(default_factory=lambda: list(QUESTION_TYPES))
    generalisation_per_user: int = Field(
        default=2, ge=0, description="Questions per user that move a revealed preference to a scenario never discussed."
    )
    abstention_per_user: int = Field(
        default=1, ge=0, description="Questions per user about a topic never discussed (generic reply correct)."
    )
    max_options: int = Field(default=4, ge=2, le=8)
    balance_profile: bool = Field(
        default=True,
        description="Pick distractors about as plausible for the user's demographic profile as the correct reply "
        "(MiniLM), so the stereotype baseline (the audit's persona_prior reader) gains nothing.",
    )
    max_per_checkpoint: int | None = Field(
        default=None, ge=1,
        description="At most this many questions about the user's own revealed preferences per user and checkpoint "
        "(generalisation, abstention and others' questions have their own counts): updated-preference and "
        "forget questions are kept first, the rest drawn at random. None: every revealed preference is asked.",
    )
    checkpoints: list[float] = Field(
        default_factory=lambda: [1 / 3, 2 / 3, 1.0],
        description="When each user is asked, as fractions of their sessions: a checkpoint f asks an hour after "
        "session ceil(f * n) of n (so 1/3, 2/3, 1 with 6 sessions: after sessions 2, 4 and 6), from what happened "
        "before it only. Checkpoints that fall after the same session are asked once.",
    )

    @field_validator("checkpoints")
    @classmethod
    def _fractions(cls, checkpoints: list[float]) -> list[float]:
        if not checkpoints:
            raise ValueError("checkpoints needs at least one fraction of the schedule, e.g. [0.33, 0.67, 1.0]")
        bad = [c for c in checkpoints if not 0 < c <= 1]
        if bad:
            raise ValueError(f"checkpoints are fractions of a user's sessions in (0, 1]; got {bad}")
        return sorted(set(checkpoints))

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: list[str]) -> list[str]:
        unknown = [t for t in types if t not in QUESTION_TYPES]
        if unknown:
            listed = ", ".join(map(repr, unknown))
            raise ValueError(f"unknown question type {listed}; choose from {', '.join(QUESTION_TYPES)}")
        return types
