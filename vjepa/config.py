"""Typed configs: a dataclass schema, a YAML recipe and `key=value` overrides, merged by OmegaConf.

Every entry point declares its schema as a dataclass. `load_config` merges the schema's defaults,
the recipe file and the command-line overrides in that order, so the value used is always the
last one written. An unknown key, a value of the wrong type or a name outside a closed set (a
field declared with `choice`) stops the run before any work starts, with a message that names the
key, the choices and where the value came from.

Recipes ship with the package: a `--config` path is read relative to the current folder, and
otherwise looked up among the shipped recipes (`configs/pretrain/tiny_world.yaml` or
`pretrain/tiny_world.yaml`), so an installed `vjepa` finds its defaults from any folder.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, Type, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")

PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"  # where `pip install .` puts the recipes
SOURCE_CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # the repository's own, in a checkout


class ConfigError(ValueError):
    """A config file or override that does not fit its schema."""


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    msg = str(exc).splitlines()[0]
    if key:
        return f"key '{key}': {msg}"
    return msg


def shipped_configs() -> Path:
    """The folder of the recipes that ship with the package (a checkout's `configs/` when run from source)."""
    return PACKAGE_CONFIGS if PACKAGE_CONFIGS.is_dir() else SOURCE_CONFIGS


def resolve_config_path(path: str | Path) -> Path:
    """A config path relative to the current folder, else one of the shipped recipes."""
    p = Path(path)
    if p.is_file():
        return p
    root = shipped_configs()
    relative = Path(*p.parts[1:]) if p.parts[:1] == ("configs",) else p
    if not p.is_absolute() and (root / relative).is_file():
        return root / relative
    raise ConfigError(f"config file not found: {path} (neither in the current folder nor among the recipes in {root})")


# --------------------------------------------------------------------------- closed sets of names


def choice(default: Any, choices: Iterable[str] | Mapping[str, Any] | Callable[[], Iterable[str]], *,
           many: bool = False) -> Any:
    """A dataclass field whose value (or, with `many`, each item of its list) must be one of `choices`.

    `choices` may be a registry (a dict, read when the config is checked, so later registrations
    count) or a function returning the names. A None default (an optional field) is never checked.
    """
    meta = {"choices": choices, "many": many}
    if many:
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _names(choices) -> list[str]:
    return list(choices() if callable(choices) else choices)


def check_choices(cfg: Any, prefix: str = "") -> None:
    """Walk a loaded config and raise ConfigError at the first value outside its field's choices."""
    if isinstance(cfg, ListConfig):
        for i, item in enumerate(cfg):
            check_choices(item, f"{prefix}[{i}]")
        return
    if not isinstance(cfg, DictConfig):
        return
    schema = OmegaConf.get_type(cfg)
    fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    for key in cfg.keys():
        name = f"{prefix}.{key}" if prefix else str(key)
        meta = fields[key].metadata if key in fields else {}
        value = OmegaConf.select(cfg, str(key), throw_on_missing=False) if "choices" in meta else None
        if "choices" in meta and value is not None:
            allowed = _names(meta["choices"])
            for item in (value if meta["many"] else [value]):
                if item not in allowed:
                    raise ConfigError(f"key '{name}': {item!r} is not one of {', '.join(allowed)}")
        node = cfg._get_node(key)
        if isinstance(node, (DictConfig, ListConfig)):
            check_choices(node, name)


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
    for override in overrides:
        cfg = merge_override(cfg, override)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"required config key '{missing[0]}' has no value{where}; set it with {missing[0]}=...")
    try:
        check_choices(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (config {path} and overrides)" if path is not None else str(exc)) from None
    return cfg  # type: ignore[return-value]


def merge_override(cfg: DictConfig, override: str) -> DictConfig:
    """`cfg` with one `key=value` from the command line merged in; a bad one names itself and what was wrong."""
    key, eq, _ = override.partition("=")
    if not eq:
        raise ConfigError(f"override {override!r} is not of the form key=value")
    try:
        parsed = OmegaConf.from_dotlist([override])
    except (OmegaConfBaseException, yaml.YAMLError) as exc:
        raise ConfigError(f"command-line override {override!r} is not valid YAML ({str(exc).splitlines()[0]}); "
                          f"a list item that holds brackets or commas goes in quotes: "
                          f"key='[\"a.b=[1,2]\"]'") from None
    try:
        return OmegaConf.merge(cfg, parsed)
    except OmegaConfBaseException as exc:
        if OmegaConf.is_list(OmegaConf.select(cfg, key.strip(), default=None)):
            raise ConfigError(f"command-line override {override!r}: key '{key.strip()}' takes a list, "
                              f"e.g. {key.strip()}=[a,b]") from None
        raise ConfigError(f"command-line override {_describe(exc)}") from exc
    except TypeError:  # OmegaConf's own, for a mapping given where a list is declared and the like
        raise ConfigError(f"command-line override {override!r}: its value does not fit key '{key.strip()}'") from None


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
