"""Typed configs: a dataclass schema, a YAML recipe and `key=value` overrides, merged by OmegaConf.

Every entry point declares its schema as a dataclass. `load_config` merges the schema's defaults,
the recipe file and the command-line overrides in that order, so the value used is always the
last one written. An unknown key or a value of the wrong type stops the run before any work
starts, with a message that names the key and where it came from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, Type, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    """A config file or override that does not fit its schema."""


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    msg = str(exc).splitlines()[0]
    if key:
        return f"key '{key}': {msg}"
    return msg


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, or relative to the repository's `configs/` folder."""
    p = Path(path)
    if p.exists():
        return p
    for candidate in (REPO_ROOT / p, CONFIG_DIR / p):
        if candidate.exists():
            return candidate
    raise ConfigError(f"config file not found: {path}")


def load_config(schema: Type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Merge `schema` defaults, the YAML at `path` and dot-list `overrides`; return a typed object.

    The result is an OmegaConf structured config (attribute access, type-checked on assignment),
    typed as the schema for readers of the code.
    """
    cfg = OmegaConf.structured(schema)
    if path is not None:
        path = resolve_config_path(path)
        try:
            recipe = OmegaConf.load(path)
        except Exception as exc:  # yaml errors carry line numbers; keep them
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        try:
            cfg = OmegaConf.merge(cfg, recipe)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"config {path}: {_describe(exc)}") from exc
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"command-line override {_describe(exc)}") from exc
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"required config key '{missing[0]}' has no value{where}; set it with {missing[0]}=...")
    return cfg  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config next to a run's outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(to_yaml(cfg))
    tmp.replace(path)


def to_container(cfg: Any) -> dict:
    """A plain dict (for checkpoints and JSON)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)
