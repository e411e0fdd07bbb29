"""all-MiniLM-L6-v2 in plain torch: the sentence embedder without sentence-transformers.

Every process that forgets, builds questions or answers them loads the embedder, and importing
``sentence_transformers`` (which pulls in ``transformers`` and scikit-learn) cost 6-9 s of each
process's start-up on two cores, longer than the model's whole work in a short run. The model
itself is a six-layer BERT encoder with mean pooling and unit-norm output; its forward pass is
about sixty lines of ``torch.nn.functional``, and its WordPiece tokenizer is the Rust
``tokenizers`` library reading the folder's ``tokenizer.json``. So this module reads the same
folder (``config.json``, ``model.safetensors``, ``tokenizer.json``, the sentence-transformers
module files) and computes the same vectors, to float rounding (``tests/test_minilm.py`` checks
them against sentence-transformers), with only ``torch``, ``safetensors`` and ``tokenizers``
imported: about 2 s instead of 8.

It reads BERT-family sentence-transformers folders with mean pooling (MiniLM, and the tiny
random models the tests build); anything else is refused with a message naming the file.

``precision="bfloat16"`` runs the encoder's matrix products in bfloat16 (the ``minilm-bf16``
embedder). On CPUs that multiply bfloat16 in hardware (Intel AMX: Sapphire Rapids and later) a
linear layer is 8x faster than in float32, and the whole encoder about 2.5x. Its vectors have
cosine 0.9999 or more with float32's (2,191 options and queries of the default run; components
within 3e-3), and 11 of that run's 2,073 answers choose another option.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

#: The fewest token rows a forward pass multiplies. The BLAS kernels give a row the same bits
#: whatever the rows beside it, except in matrices of a handful of rows, which take another path:
#: a lone short text ("", two tokens) came out 2e-7 off its value in a batch. Spare zero rows,
#: never read, keep every pass on the one path.
MIN_ROWS = 32
#: Below this many token rows per thread, a float32 pass runs on one thread. With two threads the
#: feed-forward output product (1,536 inputs) splits its sum between them for 57-192 rows, so a
#: row's last bits depended on how many rows its batch had (1.4e-7: 2 of 200 texts moved, and 3
#: of 8,550 stored answers in their sixth decimal). One thread sums each row whole, as the larger
#: passes do with any thread count (``tests/test_minilm.py``).
SPLIT_SUM_ROWS_PER_THREAD = 128

PRECISIONS = ("float32", "bfloat16")


class UnsupportedModelError(ValueError):
    """The folder is not a BERT encoder with mean pooling: use sentence-transformers for it."""


class MiniLM:
    """A BERT sentence encoder (mean pooling, unit norm) loaded from a sentence-transformers folder."""

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "float32") -> None:
        import torch
        from tokenizers import Tokenizer

        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.path = Path(path)
        self.device = torch.device(device)
        config = _read_json(self.path / "config.json")
        if config.get("model_type") != "bert":
            raise UnsupportedModelError(
                f"{self.path / 'config.json'}: model_type {config.get('model_type')!r} is not 'bert'; "
                "this embedder runs BERT encoders only")
        _check_pooling(self.path)
        self.hidden_size = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        if config.get("hidden_act", "gelu") != "gelu":
            raise UnsupportedModelError(
                f"{self.path / 'config.json'}: hidden_act {config['hidden_act']!r} is not 'gelu'")
        st_config = self.path / "sentence_bert_config.json"
        limit = _read_json(st_config).get("max_seq_length") if st_config.exists() else None
        self.max_length = int(min(limit or config["max_position_embeddings"], config["max_position_embeddings"]))
        self.weights = {name: tensor.to(self.device) for name, tensor in _load_weights(self.path).items()}
        self._bf16 = _bfloat16_layers(self.weights, self.layers) if precision == "bfloat16" else {}
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()

    @property
    def dimension(self) -> int:
        return self.hidden_size

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-norm sentence vectors, one float32 row per text.

        Nothing is padded: the texts of a batch are laid end to end as one matrix of tokens for
        the linear layers (a row's result does not depend on the rows around it), and attention
        and pooling run per text over its own tokens. A text's vector is then the same bits
        whatever else it was embedded with and whatever the thread count (``tests/test_minilm.py``).
        Padded batches moved vectors by ~1e-7 with their company, which made a store depend on
        what its process had embedded before; and padding was wasted work. A batch holds about
        ``batch_size`` texts of 64 tokens' worth of tokens."""
        import torch

        out = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        # shortest first: a batch then holds a few lengths, and attention runs once per length
        # (a run's options and memory lines took 22 attention calls per layer and batch unsorted)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        budget = batch_size * 64
        with torch.inference_mode():
            start = 0
            while start < len(order):
                end, tokens = start, 0
                while end < len(order) and (end == start or tokens + len(encodings[order[end]].ids) <= budget):
                    tokens += len(encodings[order[end]].ids)
                    end += 1
                pooled = self.mean_pooled([encodings[i].ids for i in order[start:end]])
                out[order[start:end]] = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy()
                start = end
        return out

    def mean_pooled(self, token_ids: list[list[int]]) -> Any:
        """Mean of the last layer's token states of each token-id sequence, before normalising
        (the sequences laid end to end, no padding). The one forward pass of this module."""
        import torch
        import torch.nn.functional as F

        w = self.weights
        lengths = [len(ids) for ids in token_ids]
        ids = torch.tensor([i for row in token_ids for i in row], dtype=torch.long, device=self.device)
        positions = torch.cat([torch.arange(n, device=self.device) for n in lengths])
        x = F.embedding(ids, w["embeddings.word_embeddings.weight"])
        x = x + F.embedding(torch.zeros_like(ids), w["embeddings.token_type_embeddings.weight"])
        x = x + F.embedding(positions, w["embeddings.position_embeddings.weight"])
        x = self._norm(x, "embeddings.LayerNorm")
        bounds = np.cumsum([0, *lengths]).tolist()
        # attention runs on the texts of one length at a time, as a batch: (texts, heads, length, d)
        rows_by_length: dict[int, list[int]] = {}
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            rows_by_length.setdefault(b - a, []).extend(range(a, b))
        groups = [(length, torch.tensor(rows, device=self.device)) for length, rows in rows_by_length.items()]
        x = self._layers_bfloat16(x, groups) if self._bf16 else self._layers_float32(x, groups)
        return torch.stack([x[a:b].sum(dim=0) / (b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])

    def _layers_float32(self, x: Any, groups: list[tuple[int, Any]]) -> Any:
        """The encoder's layers in float32, exactly as sentence-transformers computes them."""
        import torch

        if x.shape[0] < MIN_ROWS:  # spare rows, never read: a tiny matrix takes another GEMM path
            x = torch.cat([x, x.new_zeros(MIN_ROWS - x.shape[0], x.shape[1])])
        threads = torch.get_num_threads()
        if threads > 1 and x.shape[0] < SPLIT_SUM_ROWS_PER_THREAD * threads:
            torch.set_num_threads(1)  # a small pass: each row summed whole, as in a large one
            try:
                return self._float32_passes(x, groups)
            finally:
                torch.set_num_threads(threads)
        return self._float32_passes(x, groups)

    def _float32_passes(self, x: Any, groups: list[tuple[int, Any]]) -> Any:
        import torch.nn.functional as F

        head_size = self.hidden_size // self.heads
        scale = 1.0 / math.sqrt(head_size)
        for n in range(self.layers):
            p = f"encoder.layer.{n}."
            q, k, v = (self._linear(x, p + f"attention.self.{name}") for name in ("query", "key", "value"))
            context = x.new_zeros(x.shape)
            for length, rows in groups:
                texts = len(rows) // length
                heads = [t.index_select(0, rows).view(texts, length, self.heads, head_size).transpose(1, 2)
                         for t in (q, k, v)]
                attended = F.scaled_dot_product_attention(*heads, scale=scale)
                context.index_copy_(0, rows, attended.transpose(1, 2).reshape(texts * length, self.hidden_size))
            attended = self._norm(self._linear(context, p + "attention.output.dense") + x,
                                  p + "attention.output.LayerNorm")
            inner = F.gelu(self._linear(attended, p + "intermediate.dense"))
            x = self._norm(self._linear(inner, p + "output.dense") + attended, p + "output.LayerNorm")
        return x

    def _layers_bfloat16(self, x: Any, groups: list[tuple[int, Any]]) -> Any:
        """The encoder's layers with bfloat16 activations and products (query, key and value as one
        product, the feed-forward block in slices: ``_bfloat16_layers``); float32 again for pooling."""
        import torch
        import torch.nn.functional as F

        w = self._bf16
        rows = x.shape[0]
        x = x.to(torch.bfloat16)
        spare = _row_bucket(rows) - rows
        if spare:  # spare rows, never read: see _row_bucket
            x = torch.cat([x, x.new_zeros(spare, x.shape[1])])
        head_size = self.hidden_size // self.heads
        scale = 1.0 / math.sqrt(head_size)

        def linear(t: Any, name: str) -> Any:
            weight, bias = w[name]
            return t @ weight + bias

        def feed_forward(t: Any, name: str) -> Any:
            # in hidden-size slices, summed in float32: see _bfloat16_layers
            out: Any = None
            for (inner_weight, inner_bias), outer_weight in zip(w[name + ".in"], w[name + ".out"], strict=True):
                part = (F.gelu(t @ inner_weight + inner_bias) @ outer_weight).float()
                out = part if out is None else out + part
            return (out + w[name + ".bias"]).to(torch.bfloat16)

        def norm(t: Any, name: str) -> Any:
            weight, bias = w[name]
            return F.layer_norm(t, (self.hidden_size,), weight, bias, self.eps)

        for n in range(self.layers):
            p = f"encoder.layer.{n}."
            qkv = linear(x, p + "attention.self.qkv")
            context = x.new_zeros(x.shape)
            for length, members in groups:
                texts = len(members) // length
                q, k, v = (qkv.index_select(0, members).view(texts, length, 3, self.heads, head_size)
                           .permute(2, 0, 3, 1, 4))
                attended = F.scaled_dot_product_attention(q, k, v, scale=scale)
                context.index_copy_(0, members, attended.transpose(1, 2).reshape(texts * length, self.hidden_size))
            attended = norm(linear(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            x = norm(feed_forward(attended, p + "feed_forward") + attended, p + "output.LayerNorm")
        return x[:rows].float()

    def _linear(self, x: Any, name: str) -> Any:
        import torch.nn.functional as F

        return F.linear(x, self.weights[name + ".weight"], self.weights[name + ".bias"])

    def _norm(self, x: Any, name: str) -> Any:
        import torch.nn.functional as F

        weights = self.weights
        return F.layer_norm(x, (self.hidden_size,), weights[name + ".weight"], weights[name + ".bias"], self.eps)


def _row_bucket(rows: int) -> int:
    """The row count a bfloat16 pass is padded to: 32 or 48 times a power of two, at least ``rows``.

    torch keeps what it prepared for a bfloat16 product of each shape (about 0.85 MB for a
    384 x 1152 weight), so a process whose batches had thousands of row counts grew by 1.4 GB in
    2,000 products of one weight; padded to these buckets, a pass takes one of about sixteen
    shapes, for at most half as many rows again (a row's bits do not depend on the rows beside it)."""
    size = 32
    while size < rows:
        size = size * 3 // 2 if size & (size - 1) == 0 else size // 3 * 4
    return size


def _bfloat16_layers(weights: dict[str, Any], layers: int) -> dict[str, Any]:
    """Each layer's weights in bfloat16, transposed for ``x @ weight``, by layer name.

    A layer's query, key and value are one product instead of three. The feed-forward block is cut
    into hidden-size slices (four for MiniLM), each slice's output product summed in float32, so
    that every product reduces over 384 values. oneDNN reduced the output layer's 1536 values
    differently with the number of rows and of threads (a text's vector moved by 1e-3 between a
    batch of 117 tokens and one of 526, and between one thread and two), while a reduction over
    384 gave every row the same bits for any row count, offset and thread count tried (1 to
    5,000 rows, 1 to 4 threads)."""
    import torch

    def pair(names: tuple[str, ...]) -> tuple[Any, Any]:
        weight = torch.cat([weights[name + ".weight"] for name in names])
        bias = torch.cat([weights[name + ".bias"] for name in names])
        return weight.t().contiguous().to(torch.bfloat16), bias.to(torch.bfloat16)

    out: dict[str, Any] = {}
    for n in range(layers):
        p = f"encoder.layer.{n}."
        out[p + "attention.self.qkv"] = pair(tuple(p + f"attention.self.{s}" for s in ("query", "key", "value")))
        out[p + "attention.output.dense"] = pair((p + "attention.output.dense",))
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            out[p + name] = (weights[p + name + ".weight"].to(torch.bfloat16),
                             weights[p + name + ".bias"].to(torch.bfloat16))
        inner_weight, inner_bias = pair((p + "intermediate.dense",))
        outer_weight = weights[p + "output.dense.weight"].t().to(torch.bfloat16)
        hidden = outer_weight.shape[1]
        slices = [slice(a, a + hidden) for a in range(0, inner_weight.shape[1], hidden)]
        out[p + "feed_forward.in"] = [(inner_weight[:, s].contiguous(), inner_bias[s]) for s in slices]
        out[p + "feed_forward.out"] = [outer_weight[s].contiguous() for s in slices]
        out[p + "feed_forward.bias"] = weights[p + "output.dense.bias"].float()
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UnsupportedModelError(
            f"{path} is missing: is {path.parent} a sentence-transformers model folder?") from None
    except json.JSONDecodeError as e:
        raise UnsupportedModelError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def _check_pooling(path: Path) -> None:
    """Mean pooling is what this encoder computes; a folder that says otherwise is refused."""
    modules = path / "modules.json"
    if not modules.exists():
        return  # a bare BERT folder: mean pooling, as sentence-transformers would default to
    for module in _read_json(modules):
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            pooling = _read_json(path / module.get("path", "") / "config.json")
            modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
            if modes != {"pooling_mode_mean_tokens"}:
                raise UnsupportedModelError(
                    f"{path / module.get('path', '')}: pooling {sorted(modes)} is not mean pooling")
        elif not kind.endswith(("Transformer", "Normalize")):
            raise UnsupportedModelError(
                f"{modules}: module {kind!r} is not supported (Transformer, Pooling, Normalize)")


def _load_weights(path: Path) -> dict[str, Any]:
    """The encoder's tensors by BERT name (a ``bert.`` prefix, as in a pretraining checkpoint, dropped)."""
    safetensors_file, torch_file = path / "model.safetensors", path / "pytorch_model.bin"
    if safetensors_file.exists():
        from safetensors.torch import load_file

        raw = load_file(str(safetensors_file))
    elif torch_file.exists():
        import torch

        raw = torch.load(str(torch_file), map_location="cpu", weights_only=True)
    else:
        raise UnsupportedModelError(f"{path} has neither model.safetensors nor pytorch_model.bin")
    weights = {name.removeprefix("bert."): tensor.float() for name, tensor in raw.items()}
    if "embeddings.word_embeddings.weight" not in weights:
        raise UnsupportedModelError(
            f"{path}: no embeddings.word_embeddings.weight among its tensors; not a BERT encoder")
    return weights
