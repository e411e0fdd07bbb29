"""The openai backend against a local OpenAI-compatible server: calls, retries, cache, a full run."""

from __future__ import annotations

import asyncio

import duckdb
import pytest
from autogen_core.models import SystemMessage, UserMessage

from personasim.agents.backend_registry import Backend, backend_class, backend_names, register_backend
from personasim.agents.backends import BackendConfig, create_client
from personasim.agents.scripted import ScriptedChatCompletionClient
from personasim.agents.wrappers import ResilientClient

from .openai_server import FakeOpenAIServer

MESSAGES = [SystemMessage(content="You are helpful."), UserMessage(content="Plan my week", source="user")]


def _config(server: FakeOpenAIServer, **extra) -> BackendConfig:
    return BackendConfig(kind="openai", model="tiny-test-model", base_url=server.base_url, **extra)


def test_openai_backend_answers_and_reports_usage():
    with FakeOpenAIServer() as server:
        client = create_client(_config(server))
        result = asyncio.run(client.create(MESSAGES))
    assert result.content == "Noted: Plan my week"
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens == 4
    assert server.requests[0]["model"] == "tiny-test-model" and server.requests[0]["max_tokens"] == 400


@pytest.mark.parametrize("status", [503, 429])
def test_retries_with_backoff_until_the_server_recovers(status):
    with FakeOpenAIServer(fail_first=2, fail_status=status) as server:
        client = create_client(_config(server))
        assert isinstance(client, ResilientClient)
        client.retry.base_delay_s = 0.01
        result = asyncio.run(client.create(MESSAGES))
    assert result.content.startswith("Noted:")
    assert server.calls == 3 and client.retries == 2


def test_gives_up_after_max_retries_and_does_not_retry_client_errors():
    with FakeOpenAIServer(fail_first=10) as server:
        client = create_client(_config(server, max_retries=2))
        client.retry.base_delay_s = 0.01
        with pytest.raises(Exception, match="503|try again"):
            asyncio.run(client.create(MESSAGES))
        assert server.calls == 3
    with FakeOpenAIServer(fail_first=10, fail_status=400) as server:
        client = create_client(_config(server))
        with pytest.raises(Exception, match="400|try again"):
            asyncio.run(client.create(MESSAGES))
        assert server.calls == 1


def test_response_cache_replays_calls_for_free(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer() as server:
        first = asyncio.run(create_client(_config(server), cache_path=cache).create(MESSAGES))
        again = create_client(_config(server), cache_path=cache)
        second = asyncio.run(again.create(MESSAGES))
        assert server.calls == 1 and again.hits == 1 and second.cached
        assert second.content == first.content
        other = asyncio.run(create_client(_config(server, temperature=0.1), cache_path=cache).create(MESSAGES))
        assert server.calls == 2 and not other.cached, "sampling parameters are part of the key"
        off = create_client(_config(server), cache_path=cache, cache_mode="off")
        asyncio.run(off.create(MESSAGES))
        assert server.calls == 3


def test_api_key_comes_from_the_named_environment_variable(monkeypatch):
    with FakeOpenAIServer() as server:
        with pytest.raises(ValueError, match="PERSONASIM_TEST_KEY"):
            create_client(_config(server, api_key_env="PERSONASIM_TEST_KEY"))
        monkeypatch.setenv("PERSONASIM_TEST_KEY", "sk-test-secret")
        create_client(_config(server, api_key_env="PERSONASIM_TEST_KEY"))
    assert "sk-test-secret" not in BackendConfig(kind="openai", model="m", api_key_env="X").model_dump_json()


def test_full_run_with_an_openai_chatbot(ray_session, tmp_path):
    from personasim.api import run
    from personasim.sim.config import RunConfig

    with FakeOpenAIServer() as server:
        config = RunConfig.model_validate({
            "seed": 3, "population": {"users": 3}, "schedule": {"sessions": 2},
            "memory": {"strategies": ["none", "agentic"]},
            "chatbot_backend": {"kind": "openai", "model": "tiny-test-model", "base_url": server.base_url},
        })
        summary = run(config, tmp_path / "llm.duckdb")
        served = server.calls
        assert served > 0
        rerun = run(config, tmp_path / "llm.duckdb", overwrite=True)
        assert server.calls == served, "a rerun replays every LLM call from the cache"
    assert summary.sessions == rerun.sessions == 6
    con = duckdb.connect(str(tmp_path / "llm.duckdb"), read_only=True)
    replies = con.execute("SELECT text, completion_tokens FROM turns WHERE role = 'assistant'").fetchall()
    assert replies and all(text.startswith("Noted:") and tokens > 0 for text, tokens in replies)


def test_consistency_probes_catch_a_user_simulator_that_loses_its_persona(ray_session, tmp_path):
    """The scripted user always answers in character; an echoing 'LLM' user does not."""
    from personasim.api import run
    from personasim.sim.config import RunConfig

    base = {"seed": 5, "population": {"users": 3}, "schedule": {"sessions": 2},
            "dialogue": {"probe_every": 1, "probe_topics": 3}, "memory": {"strategies": ["none"]}}
    run(RunConfig.model_validate(base), tmp_path / "scripted.duckdb")
    con = duckdb.connect(str(tmp_path / "scripted.duckdb"), read_only=True)
    n, rate = con.execute("SELECT count(*), avg(consistent::INT) FROM consistency_probes").fetchall()[0]
    con.close()
    assert n == 3 * 2 * 3 and rate == 1.0
    with FakeOpenAIServer() as server:
        llm_user = {**base, "user_backend": {"kind": "openai", "model": "echo", "base_url": server.base_url}}
        run(RunConfig.model_validate(llm_user), tmp_path / "llm.duckdb")
    con = duckdb.connect(str(tmp_path / "llm.duckdb"), read_only=True)
    n, rate = con.execute("SELECT count(*), avg(consistent::INT) FROM consistency_probes").fetchall()[0]
    assert n == 18 and rate < 0.8


def test_fact_memories_extract_through_the_llm_backend():
    """With an LLM backend, fact extraction is a prompt to the model, not the scripted rules."""
    from datetime import datetime

    from personasim.agents.memory import MemorySettings, create_memory, message_content

    with FakeOpenAIServer() as server:
        client = create_client(_config(server))
        memory = create_memory("fact_list", MemorySettings(), client)
        message = message_content("user", "I swim every morning before work.", datetime(2025, 1, 1))
        asyncio.run(memory.add(message))
        prompt = server.requests[-1]["messages"][0]["content"]
    assert "Extract every personal fact" in prompt
    assert memory.items() == ["[2025-01-01] Noted: I swim every morning before work."]


# -- the backend registry ------------------------------------------------------------------------

OPENAI_JSON = (
    '{"kind":"openai","model":"m","base_url":"http://x","api_key_env":null,"model_info":null,"temperature":0.7,'
    '"max_tokens":400,"seed":null,"timeout_s":60.0,"max_retries":5,"max_concurrency":32,"path":null,'
    '"dtype":"auto","device":"auto","batch_size":8}'
)


class _EchoClient(ScriptedChatCompletionClient):
    """A stand-in client: the registry test only checks which class builds it, and with what."""

    def __init__(self, model: str, share: int) -> None:
        super().__init__(model=model)
        self.share = share


@register_backend("echo-test")
class _EchoBackend(Backend):
    is_llm = True

    @classmethod
    def validate(cls, config: BackendConfig) -> None:
        if config.model == "scripted-v1":
            raise ValueError("the echo-test backend needs `model`")

    @classmethod
    def create(cls, config, options):
        return _EchoClient(config.model, options.concurrency_share)


def test_a_registered_backend_is_accepted_and_built():
    assert "echo-test" in backend_names() and backend_class("echo-test") is _EchoBackend
    config = BackendConfig(kind="echo-test", model="parrot")
    assert config.is_llm
    client = create_client(config, concurrency_share=3)
    assert isinstance(client, _EchoClient) and client.share == 3
    with pytest.raises(ValueError, match="echo-test backend needs `model`"):
        BackendConfig(kind="echo-test")
    assert BackendConfig.model_validate_json(config.model_dump_json()) == config


def test_unknown_kind_is_refused_with_the_registered_names():
    with pytest.raises(ValueError, match=r"unknown backend 'nope'; choose from: echo-test, openai, scripted, "
                                         r"transformers"):
        BackendConfig(kind="nope")
    with pytest.raises(ValueError, match="unknown backend"):
        backend_class("nope")


def test_names_are_unique_and_built_ins_are_reserved():
    with pytest.raises(ValueError, match="already registered"):
        register_backend("echo-test")(type("Other", (Backend,), {}))
    with pytest.raises(ValueError, match="built-in"):
        register_backend("openai")(type("Mine", (Backend,), {}))
    with pytest.raises(TypeError, match="subclass of Backend"):
        register_backend("not-a-backend")(object)
    register_backend("echo-test")(_EchoBackend)  # registering the same class again is harmless


def test_is_llm_per_backend():
    assert not BackendConfig().is_llm
    assert BackendConfig(kind="openai", model="m").is_llm
    assert BackendConfig(kind="transformers", path="/nowhere").is_llm
    assert [backend_class(k).is_llm for k in ("scripted", "openai", "transformers")] == [False, True, True]


def test_config_errors_and_json_are_unchanged():
    """Run ids hash the config JSON: the registry must not change a byte of it."""
    assert BackendConfig(kind="openai", model="m", base_url="http://x").model_dump_json() == OPENAI_JSON
    assert BackendConfig().model_dump_json() == OPENAI_JSON.replace('"openai","model":"m","base_url":"http://x"',
                                                                   '"scripted","model":"scripted-v1","base_url":null')
    with pytest.raises(ValueError, match=r"the openai backend needs `model` \(the served model's name\)"):
        BackendConfig(kind="openai")
    with pytest.raises(ValueError, match=r"the transformers backend needs `path` \(a folder holding a saved causal"):
        BackendConfig(kind="transformers")


def test_built_in_backends_load_lazily():
    """Validating any built-in kind imports neither torch nor autogen-ext's OpenAI client."""
    import subprocess
    import sys

    code = ("import sys\nfrom personasim.agents.backends import BackendConfig\n"
            "BackendConfig(kind='openai', model='m'); BackendConfig(kind='transformers', path='/p')\n"
            "print('torch' in sys.modules, 'autogen_ext.models.openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
