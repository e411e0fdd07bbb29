"""Analysis: questions generated from ground truth, readers, and scores. Reads the store; writes only
its own tables (questions, answers)."""

from personasim.analysis.answer_parsing import parse_choice
from personasim.analysis.evaluate import StrategyScore, answer_questions, score_by_strategy
from personasim.analysis.llm_reader import LLMReader
from personasim.analysis.metrics import accuracy_table, summary_tables
from personasim.analysis.pmv2_export import export_personamem_v2
from personasim.analysis.pmv2_format import PersonaMemFormatError
from personasim.analysis.pmv2_load import build_memory_snapshots, load_personamem_v2
from personasim.analysis.questions import (
    QUESTION_TYPES,
    QuestionConfig,
    generate_questions,
    load_questions,
    load_timelines,
)
from personasim.analysis.reader import EmbeddingReader, ReaderAnswer

__all__ = [
    "QUESTION_TYPES",
    "EmbeddingReader",
    "PersonaMemFormatError",
    "QuestionConfig",
    "accuracy_table",
    "build_memory_snapshots",
    "export_personamem_v2",
    "load_personamem_v2",
    "load_questions",
    "summary_tables",
    "LLMReader",
    "ReaderAnswer",
    "StrategyScore",
    "answer_questions",
    "generate_questions",
    "load_timelines",
    "parse_choice",
    "score_by_strategy",
]
