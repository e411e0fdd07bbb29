"""One registry of model backends, so a user adds their own in one file with ``@register_backend``.

Why: ``BackendConfig.kind`` names a backend, and everything that depends on the kind (which
config fields it needs, how its client is built, whether it is a real LLM) lives with the backend
in one class, instead of ``if kind == ...`` chains spread over the code base. Callers ask
``config.is_llm`` rather than comparing ``kind`` with ``"scripted"``.

How to add a backend: subclass ``Backend`` in a module of your own, decorate it, and make sure the
module is imported before a config names it, in every process that builds clients (listing the
module in ``memory.plugins`` does that: it is imported before the backends are validated, and
again in each actor)::

    @register_backend("echo")
    class EchoBackend(Backend):
        is_llm = False

        @classmethod
        def create(cls, config, options):   # options: ClientOptions (catalog, cache, concurrency share)
            return EchoClient(config.model)

``validate(config)`` (optional) refuses configs the backend cannot run. ``BackendConfig`` itself
stays one flat model with the same fields for every backend: its JSON is hashed into run ids.

The built-in backends (scripted, openai, transformers) register lazily: the first lookup of a
built-in name imports only its module, so naming ``openai`` never imports torch and naming
``scripted`` imports neither torch nor autogen-ext's OpenAI client. They live in
``scripted_backend``, ``openai_backend`` and ``transformers_entry`` (the client itself is in
``transformers_backend``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from autogen_core.models import ChatCompletionClient

    from personasim.agents.wrappers import CacheMode
    from personasim.personas.catalog import TopicCatalog


@dataclass(frozen=True)
class ClientOptions:
    """How a client is built in this process, beside what the config says: the topic catalog
    (for the scripted backend), the response cache, how many processes split the backend's
    ``max_concurrency`` (``concurrency_share``), and a shared ``ModelServer`` actor that holds a
    transformers model (the engine starts one per GPU) to use instead of loading weights here."""

    catalog: TopicCatalog | None = None
    cache_path: str | Path | None = None
    cache_mode: CacheMode = "readwrite"
    concurrency_share: int = 1
    model_server: Any | None = None


class Backend:
    """A model backend: checks its part of a ``BackendConfig`` and builds the client.

    Classes are used as they are (class methods), never instantiated by the registry. ``config``
    is a ``personasim.agents.backends.BackendConfig`` (typed ``Any`` here: that module imports this
    one; subclasses annotate it)."""

    name: ClassVar[str] = ""  # set by @register_backend
    is_llm: ClassVar[bool] = True  # False for backends that only imitate a model (scripted)

    @classmethod
    def validate(cls, config: Any) -> None:
        """Raise ``ValueError`` when ``config`` lacks what this backend needs."""

    @classmethod
    def create(cls, config: Any, options: ClientOptions) -> ChatCompletionClient:
        """The client for ``config``, built as ``options`` say (see ``ClientOptions``)."""
        raise NotImplementedError(f"backend {cls.name!r} does not implement create()")


_REGISTRY: dict[str, type[Backend]] = {}
# the built-in backends and the modules that register them (imported on first use)
_BUILTIN = {
    "scripted": "personasim.agents.scripted_backend",
    "openai": "personasim.agents.openai_backend",
    "transformers": "personasim.agents.transformers_entry",
}
B = TypeVar("B", bound=type[Backend])


def register_backend(name: str) -> Callable[[B], B]:
    """Class decorator: make ``cls`` the backend for ``BackendConfig(kind=name)``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a backend name must be a non-empty string, not {name!r}")

    def register(cls: B) -> B:
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise TypeError(f"@register_backend({name!r}) needs a subclass of Backend, not {cls!r}")
        if name in _BUILTIN and cls.__module__ != _BUILTIN[name]:
            raise ValueError(f"{name!r} is a built-in backend; register yours under another name")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a backend named {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def backend_names() -> list[str]:
    """Every registered backend name (the built-ins and those registered so far), sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def backend_class(kind: str) -> type[Backend]:
    """The class registered as ``kind``; a ``ValueError`` listing the names when there is none."""
    if kind not in _REGISTRY and kind in _BUILTIN:
        importlib.import_module(_BUILTIN[kind])
    if kind not in _REGISTRY:
        raise ValueError(
            f"unknown backend {kind!r}; choose from: {', '.join(backend_names())} (a backend of your own "
            "registers with @register_backend when its module is imported: list it in memory.plugins)"
        )
    return _REGISTRY[kind]


def _load_builtin() -> None:
    for module in _BUILTIN.values():
        importlib.import_module(module)  # each registers its backend
