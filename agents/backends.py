"""Model backends by name. Each returns an AutoGen ``ChatCompletionClient``."""

from __future__ import annotations

from typing import Literal

from autogen_core.models import ChatCompletionClient
from pydantic import BaseModel, ConfigDict

from personasim.agents.scripted import ScriptedChatCompletionClient
from personasim.personas.catalog import TopicCatalog


class BackendConfig(BaseModel):
    """Which model plays a role. Only the offline ``scripted`` backend exists so far."""
    model_config = ConfigDict(extra="forbid")


    kind: Literal["scripted"] = "scripted"
    model: str = "scripted-v1"


def create_client(config: BackendConfig, catalog: TopicCatalog | None = None) -> ChatCompletionClient:
    if config.kind == "scripted":
        return ScriptedChatCompletionClient(catalog=catalog, model=config.model)
    raise ValueError(f"unknown backend {config.kind!r}; choose from: scripted")
