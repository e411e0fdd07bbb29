"""The transformers backend on a tiny random model built in the test (real loading code, no hub)."""

from __future__ import annotations

import asyncio

import pytest
from autogen_core.models import SystemMessage, UserMessage

from personasim.agents.backends import BackendConfig, create_client
from personasim.agents.transformers_backend import ModelPathError, TransformersChatCompletionClient

from .tiny_models import build_tiny_causal_lm


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"))


def _messages(i: int):
    return [SystemMessage(content="you help"), UserMessage(content=f"please plan my week {'food ' * i}", source="user")]


def test_generates_batched_and_deterministic(tiny_model):
    config = BackendConfig(kind="transformers", model="tiny", path=str(tiny_model), max_tokens=8, temperature=0.0,
                           batch_size=4)
    client = create_client(config)
    assert isinstance(client, TransformersChatCompletionClient)

    async def many():
        return await asyncio.gather(*(client.create(_messages(i)) for i in range(4)))

    results = asyncio.run(many())
    assert client.batches == [4], "concurrent requests are generated as one batch"
    assert all(isinstance(r.content, str) and r.usage.prompt_tokens > 0 for r in results)
    assert all(0 < r.usage.completion_tokens <= 8 for r in results)
    again = create_client(config)
    assert asyncio.run(again.create(_messages(2))).content == results[2].content
    assert "<|assistant|>" in client.render(_messages(0))


def test_cache_wraps_the_local_model(tiny_model, tmp_path):
    config = BackendConfig(kind="transformers", model="tiny", path=str(tiny_model), max_tokens=4)
    first = create_client(config, cache_path=tmp_path / "c.sqlite")
    asyncio.run(first.create(_messages(1)))
    second = create_client(config, cache_path=tmp_path / "c.sqlite")
    assert asyncio.run(second.create(_messages(1))).cached and second.hits == 1


def test_clear_errors_for_bad_paths(tmp_path):
    with pytest.raises(ModelPathError, match="does not exist"):
        TransformersChatCompletionClient(tmp_path / "nowhere")
    with pytest.raises(ModelPathError, match="no model config"):
        TransformersChatCompletionClient(tmp_path)
    from transformers import T5Config

    T5Config(d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=16, vocab_size=50).save_pretrained(tmp_path / "t5")
    with pytest.raises(ModelPathError, match="not a causal language model"):
        TransformersChatCompletionClient(tmp_path / "t5")
    with pytest.raises(ValueError, match="needs `path`"):
        BackendConfig(kind="transformers", model="x")


def test_full_run_with_a_local_model_chatbot(ray_session, tiny_model, tmp_path):
    import duckdb

    from personasim.api import run
    from personasim.sim.config import RunConfig

    config = RunConfig.model_validate({
        "seed": 1, "population": {"users": 2}, "schedule": {"sessions": 2},
        "memory": {"strategies": ["none", "agentic"]},
        "chatbot_backend": {"kind": "transformers", "model": "tiny", "path": str(tiny_model), "max_tokens": 6},
    })
    summary = run(config, tmp_path / "local.duckdb")
    assert summary.sessions == 4
    con = duckdb.connect(str(tmp_path / "local.duckdb"), read_only=True)
    usage = con.execute("SELECT min(completion_tokens), max(completion_tokens) FROM turns WHERE role = 'assistant'")
    low, high = usage.fetchall()[0]
    assert low >= 0 and high <= 6


def test_one_shared_model_actor_batches_the_calls_of_every_shard(ray_session, tiny_model):
    """The engine's model actor: callers in different shards share one copy of the weights, and
    their concurrent calls are generated together; results equal the in-process client's."""
    import ray

    from personasim.agents.model_actor import RemoteModelClient, start_model_servers

    config = BackendConfig(kind="transformers", model="tiny", path=str(tiny_model), max_tokens=5, temperature=0.0,
                           batch_size=8)
    (server,) = start_model_servers(config)  # this machine has no GPU: one CPU server
    shards = [RemoteModelClient(server), RemoteModelClient(server)]  # as two shard actors hold them

    async def from_all_shards():
        return await asyncio.gather(*(shards[i % 2].create(_messages(i)) for i in range(8)))

    remote = [r.content for r in asyncio.run(from_all_shards())]
    sizes = ray.get(server.batch_sizes.remote())
    ray.kill(server)
    assert sum(sizes) == 8 and max(sizes) > 1, sizes
    local = create_client(config)
    expected = [asyncio.run(local.create(_messages(i))).content for i in range(8)]
    assert remote == expected
