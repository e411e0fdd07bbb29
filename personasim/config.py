"""Building a run config from defaults, a config file and command-line overrides (in that order)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from personasim.sim.config import ConfigFileError, RunConfig, describe_validation_error, load_config_file


class ConfigError(ValueError):
    """A run config that cannot be used; the message names the setting and what is wrong."""


def preset_names() -> list[str]:
    """The presets shipped with the package (``personasim/presets/*.yaml``)."""
    folder = resources.files("personasim").joinpath("presets")
    return sorted(f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """A shipped preset's settings, e.g. ``pmv2-32k`` (PersonaMem-v2's 32k shape)."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}; choose from: {', '.join(names)}")
    path = resources.files("personasim").joinpath("presets", f"{name}.yaml")
    with resources.as_file(path) as file:
        return load_config_file(file)


def build_config(
    config_file: str | Path | None = None, base: dict[str, Any] | None = None, preset: str | None = None,
    **overrides: Any,
) -> RunConfig:
    """Defaults (or ``base``, e.g. a fork's source config), then ``preset``, then ``config_file``,
    then the non-None ``overrides``.

    Overrides use the command line's names: users, sessions, seed, memory (list or comma string),
    chatbot_memory, history_tokens, actors, address, cache, embedder.
    """
    try:
        data: dict[str, Any] = _merge(base or {}, load_preset(preset) if preset else {})
        data = _merge(data, load_config_file(config_file) if config_file else {})
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from exc
    paths = {
        "users": ("population", "users"),
        "sessions": ("schedule", "sessions"),
        "seed": ("seed",),
        "memory": ("memory", "strategies"),
        "chatbot_memory": ("memory", "chatbot"),
        "history_tokens": ("dialogue", "history_tokens"),
        "actors": ("engine", "num_actors"),
        "address": ("engine", "address"),
        "cache": ("engine", "cache"),
        "embedder": ("embedder",),
    }
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in paths:
            raise ConfigError(f"unknown override {key!r}")
        if key == "memory" and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        node = data
        *parents, leaf = paths[key]
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"setting {p!r} must be a mapping")
        node[leaf] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        origin = f" in {config_file}" if config_file else ""
        raise ConfigError(f"invalid run config{origin}: {describe_validation_error(exc)}") from exc


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section (a file that sets memory.chatbot keeps memory.strategies)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
