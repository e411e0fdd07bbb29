"""Analysis: questions generated from ground truth, readers, and scores. Reads the store; writes only
its own tables (questions, answers)."""

from personasim.analysis.answer_parsing import parse_choice
from personasim.analysis.evaluate import StrategyScore, answer_questions, score_by_strategy
from personasim.analysis.llm_reader import LLMReader
from personasim.analysis.questions import generate_questions, load_timelines
from personasim.analysis.reader import EmbeddingReader, ReaderAnswer

__all__ = [
    "EmbeddingReader",
    "LLMReader",
    "ReaderAnswer",
    "StrategyScore",
    "answer_questions",
    "generate_questions",
    "load_timelines",
    "parse_choice",
    "score_by_strategy",
]
