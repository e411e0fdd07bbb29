"""Analysis: questions generated from ground truth, readers, and scores. Reads the store; writes only
its own tables (questions, answers). PersonaMem-v2's files are read and written by
``personasim.interop.personamem_v2``."""

from personasim.analysis.answer_parsing import parse_choice
from personasim.analysis.evaluate import StrategyScore, answer_questions, score_by_strategy
from personasim.analysis.llm_reader import LLMReader
from personasim.analysis.metrics import accuracy_table, summary_tables
from personasim.analysis.questions import (
    QUESTION_TYPES,
    QuestionConfig,
    generate_questions,
)
from personasim.analysis.reader import EmbeddingReader, ReaderAnswer
from personasim.sim.store_read import read_questions, read_timelines

# the names analysis exported before the store layer owned these readers
load_questions = read_questions
load_timelines = read_timelines

__all__ = [
    "QUESTION_TYPES",
    "EmbeddingReader",
    "QuestionConfig",
    "accuracy_table",
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
