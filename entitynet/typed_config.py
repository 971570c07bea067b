"""Typed configuration: nested dataclasses filled from YAML layers and command-line overrides.

Every key is checked against the dataclass schema before anything runs: an unknown key, a
wrong type or an impossible value fails at start with a message that names the key and where
it was set (a file, ``--set`` or a flag). Fields carry their help text in
``metadata["help"]``; ``describe`` turns it into the ``--help`` listing.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

DEFAULTS = "defaults"
# Configs never hold secrets: they name environment variables instead (``api_key_env``).
_SECRET_KEY = re.compile(r"(token|password|secret|api_key|apikey)$", re.IGNORECASE)


class ConfigError(ValueError):
    """A configuration problem, with the key and the place it was set."""


class InvalidValue(ValueError):
    """Raised by a dataclass's ``__post_init__`` for one of its own fields."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def require(condition: bool, key: str, message: str) -> None:
    """Validation helper for ``__post_init__``: ``require(self.n > 0, "n", "must be positive")``."""
    if not condition:
        raise InvalidValue(key, message)


def option(default: Any = dataclasses.MISSING, help: str = "", *, path: bool = False, runtime: bool = False,
           flag: str | None = None, metavar: str | None = None, exclusive: str | None = None) -> Any:
    """A dataclass field with help text; list and dict defaults are copied per instance.

    ``flag`` is the command-line flag that sets it (``--limit``), declared here only: the CLI
    adds it to the command of the field's section with this help text and the key; ``metavar``
    names its value in --help; flags of one ``exclusive`` group are mutually exclusive. A flag
    declared on several fields (``--contact``) sets them all where a command takes them all.

    ``path=True`` marks a filesystem path: a relative value in a YAML file is read relative
    to that file's folder, one given on the command line relative to the working directory
    (a value holding ``://`` is a URL and stays as written).
    ``runtime=True`` marks a setting of how a stage runs (processes, threads, concurrency) that
    cannot change what it makes: it is left out of the stage's fingerprint (``identity``), so
    changing it never makes a finished or half-done stage start over.
    """
    if runtime:
        help = f"{help} (how the stage runs, not what it makes: changing it never redoes the stage)"
    metadata = {"help": help, "path": path, "runtime": runtime, "flag": flag, "metavar": metavar, "exclusive": exclusive}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Layers:
    """Merges configuration layers (defaults < preset < file < overrides) and remembers,
    for every key, which layer set it, so errors can say where to look."""

    def __init__(self, schema: type) -> None:
        self.schema = schema
        self.data: dict[str, Any] = {}
        self.origins: dict[str, str] = {}

    def add(self, data: Mapping[str, Any] | None, origin: str, base_dir: Path | None = None) -> None:
        if data is None:
            return
        if not isinstance(data, Mapping):
            raise ConfigError(f"{origin}: expected a mapping of keys at the top level, got {_show(data)}")
        data = _resolve_paths(self.schema, data, base_dir or Path.cwd(), origin, "")
        _merge(self.data, data, origin, self.origins, "")

    def add_file(self, path: Path, origin: str | None = None) -> None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
        self.add(loaded or {}, origin or str(path), base_dir=path.resolve().parent)

    def add_value(self, dotted: str, value: Any, origin: str) -> None:
        """One key set by a command-line flag; relative paths are taken from the working directory."""
        self.add(_nest(dotted, value), origin, base_dir=Path.cwd())

    def add_assignments(self, assignments: list[str], origin: str = "--set") -> None:
        """``key.sub=value`` pairs; values are parsed as YAML (``[a, b]``, ``10``, ``null``)."""
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{origin}: expected KEY=VALUE, got {assignment!r}")
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                value = raw
            self.add(_nest(key.strip(), value), origin)

    def origin_of(self, key: str) -> str:
        while key:
            if key in self.origins:
                return self.origins[key]
            # an entry of a list (``mix[0].weight``) was set with its list (``mix``)
            indexed = re.fullmatch(r"(.+)\[\d+\]", key)
            key = indexed.group(1) if indexed else key.rpartition(".")[0]
        return DEFAULTS

    def build(self) -> Any:
        return _build(self.schema, self.data, "", self)


def describe(schema: type, prefix: str = "") -> Iterator[tuple[str, str, Any, str]]:
    """Yield (dotted key, type name, default, help) for every leaf of a config schema."""
    hints = get_type_hints(schema)
    for item in dataclasses.fields(schema):
        key = f"{prefix}{item.name}"
        kind = hints[item.name]
        if _is_dataclass_type(kind):
            yield from describe(kind, key + ".")
            continue
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = None
        yield key, type_name(kind), default, item.metadata.get("help", "")


def describe_text(schema: type, prefix: str = "", width: int = 74) -> str:
    """Every key of a config schema with its type, default and help, for a --help epilog."""
    import textwrap

    return "\n".join(
        f"  {key} ({kind}, default {default!r})\n" + textwrap.indent(textwrap.fill(text, width), "      ")
        for key, kind, default, text in describe(schema, prefix)
    )


@dataclasses.dataclass(frozen=True)
class Flag:
    """A command-line flag declared on a schema field (``option(..., flag=...)``)."""

    name: str  # --limit
    key: str  # kg.limit_per_root
    kind: Any  # the field's type
    help: str
    metavar: str | None
    exclusive: str | None


def flags(schema: type, prefix: str = "") -> Iterator[Flag]:
    """Every flag declared in a config schema, in field order."""
    hints = get_type_hints(schema)
    for item in dataclasses.fields(schema):
        key = f"{prefix}{item.name}"
        if _is_dataclass_type(hints[item.name]):
            yield from flags(hints[item.name], key + ".")
        elif item.metadata.get("flag"):
            yield Flag(item.metadata["flag"], key, hints[item.name], item.metadata.get("help", ""),
                       item.metadata.get("metavar"), item.metadata.get("exclusive"))


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def identity(config: Any) -> dict[str, Any]:
    """``to_dict(config)`` less the runtime fields: the settings that decide what a stage makes."""
    data = to_dict(config)
    for key in runtime_keys(type(config)):
        *parents, name = key.split(".")
        node = data
        for parent in parents:
            node = node[parent]
        del node[name]
    return data


def runtime_keys(schema: type, prefix: str = "") -> set[str]:
    """Dotted keys of the fields marked ``runtime`` in a config schema."""
    hints = get_type_hints(schema)
    keys = set()
    for item in dataclasses.fields(schema):
        if _is_dataclass_type(hints[item.name]):
            keys |= runtime_keys(hints[item.name], f"{prefix}{item.name}.")
        elif item.metadata.get("runtime"):
            keys.add(f"{prefix}{item.name}")
    return keys


def type_name(kind: Any) -> str:
    if _is_dataclass_type(kind):  # an entry of a list of mappings (``mix``)
        return f"mapping with keys {', '.join(item.name for item in dataclasses.fields(kind))}"
    origin = get_origin(kind)
    if origin is Literal:
        return "|".join(str(arg) for arg in get_args(kind))
    if origin in (Union, types.UnionType):
        names = [type_name(arg) for arg in get_args(kind) if arg is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in get_args(kind) else "")
    if origin is list:
        return f"list of {type_name(get_args(kind)[0])}"
    if origin is dict:
        return f"mapping of {type_name(get_args(kind)[0])} to {type_name(get_args(kind)[1])}"
    return {str: "string", int: "integer", float: "number", bool: "true|false"}.get(kind, str(kind))


# ---------------------------------------------------------------------------------------------
def _build(schema: type[T], data: Mapping[str, Any], prefix: str, layers: Layers) -> T:
    hints = get_type_hints(schema)
    names = [item.name for item in dataclasses.fields(schema)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            known = ", ".join(names)
            raise ConfigError(f"{layers.origin_of(dotted)}: unknown key '{dotted}'{hint}; known keys here: {known}")
        kwargs[key] = _coerce(hints[key], value, dotted, layers)
    try:
        return schema(**kwargs)
    except InvalidValue as error:
        dotted = f"{prefix}{error.key}"
        raise ConfigError(f"{layers.origin_of(dotted)}: {dotted}: {error.message}") from None


def _coerce(kind: Any, value: Any, key: str, layers: Layers) -> Any:
    if _is_dataclass_type(kind):
        if not isinstance(value, Mapping):
            raise _type_error(kind, value, key, layers)
        return _build(kind, value, key + ".", layers)
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        options = get_args(kind)
        if value is None and type(None) in options:
            return None
        for option_kind in options:
            if option_kind is type(None):
                continue
            try:
                return _coerce(option_kind, value, key, layers)
            except ConfigError:
                continue
        raise _type_error(kind, value, key, layers)
    if origin is Literal:
        if value in get_args(kind):
            return value
        raise ConfigError(f"{layers.origin_of(key)}: {key}: must be one of {type_name(kind)}, got {_show(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(kind, value, key, layers)
        (item_kind,) = get_args(kind)
        return [_coerce(item_kind, item, f"{key}[{index}]", layers) for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _type_error(kind, value, key, layers)
        key_kind, value_kind = get_args(kind)
        return {
            _coerce(key_kind, name, f"{key}.{name}", layers): _coerce(value_kind, item, f"{key}.{name}", layers)
            for name, item in value.items()
        }
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported config type {kind!r} for {key}")
    raise _type_error(kind, value, key, layers)


def _type_error(kind: Any, value: Any, key: str, layers: Layers) -> ConfigError:
    return ConfigError(f"{layers.origin_of(key)}: {key}: expected {type_name(kind)}, got {_show(value)}")


def _show(value: Any) -> str:
    kind = {dict: "a mapping", list: "a list"}.get(type(value))
    return kind or f"{value!r}"


def _merge(target: dict, data: Mapping, origin: str, origins: dict[str, str], prefix: str) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if _SECRET_KEY.search(str(key)):
            raise ConfigError(
                f"{origin}: {dotted}: secrets never go in a config; set an environment variable "
                f"and name it in '{key}_env' instead"
            )
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value, origin, origins, dotted + ".")
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value
            for known in [k for k in origins if k.startswith(dotted + ".")]:
                del origins[known]
        origins[dotted] = origin


def _resolve_paths(schema: Any, data: Mapping, base_dir: Path, origin: str, prefix: str) -> dict:
    """Make relative values of path fields absolute against ``base_dir``."""
    if not _is_dataclass_type(schema):
        return dict(data)
    hints = get_type_hints(schema)
    fields = {item.name: item for item in dataclasses.fields(schema)}
    resolved = {}
    for key, value in data.items():
        item = fields.get(key)
        if item is not None and _is_dataclass_type(hints[key]) and isinstance(value, Mapping):
            value = _resolve_paths(hints[key], value, base_dir, origin, f"{prefix}{key}.")
        elif item is not None and item.metadata.get("path") and isinstance(value, str) and value and "://" not in value:
            value = str((base_dir / Path(value).expanduser()).resolve())
        resolved[key] = value
    return resolved


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def add_flags(parser: argparse.ArgumentParser, section: type, prefix: str, only: set[str] | None = None) -> None:
    """The flags declared in ``section`` (keys under ``prefix``) added to ``parser``, each with its
    option's help, type and key: how `entitynet`'s stage commands and the trainer's command are
    made. A flag declared on several keys (the run's --contact) is added once and sets them all.
    What each sets is kept in the parser's defaults (``flag_keys``) for ``flag_values``."""
    declared: dict[str, list[Flag]] = {}
    for flag in flags(section, prefix):
        if only is None or flag.name in only:
            declared.setdefault(flag.name, []).append(flag)
    groups: dict[str, Any] = {}
    keys: list[tuple[str, str, str]] = []
    for name, same in declared.items():
        first = same[0]
        if first.exclusive and first.exclusive not in groups:
            groups[first.exclusive] = parser.add_mutually_exclusive_group()
        target = groups[first.exclusive] if first.exclusive else parser
        dest = name.lstrip("-").replace("-", "_")
        named = ", ".join(flag.key for flag in same)
        target.add_argument(name, dest=dest, help=f"{first.help} ({named})", **_argument_kind(first))
        for flag in same:
            label = name if len(same) == 1 else f"{name} ({flag.key.split('.')[0]})"
            keys.append((label, flag.key, dest))
    parser.set_defaults(flag_keys=keys)


def _argument_kind(flag: Flag) -> dict[str, Any]:
    """argparse's settings for a flag of this type: choices, a number, a comma-separated list, a switch."""
    kind = flag.kind
    if get_origin(kind) in (Union, types.UnionType):
        kind = next(arg for arg in get_args(kind) if arg is not type(None))
    settings: dict[str, Any] = {"metavar": flag.metavar} if flag.metavar else {}
    if kind is bool:
        return {"action": "store_true", "default": None}
    if kind is int:
        return {**settings, "type": int}
    if get_origin(kind) is Literal:
        return {**settings, "choices": list(get_args(kind))}
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        return {**settings, "type": _comma_list(list(get_args(item)) if get_origin(item) is Literal else None)}
    return settings


def _comma_list(choices: list[str] | None) -> Any:
    """Names of a fixed set: at least one; free names (the trainer's --report-to): "" is none."""

    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if choices is not None and name not in choices]
        if unknown or (not names and choices is not None):
            among = f" of {', '.join(choices)}" if choices else ""
            raise argparse.ArgumentTypeError(f"expected a comma-separated list{among}, got {text!r}")
        return names

    return parse


def flag_values(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """{flag: (key, value)} of the flags the command declared, for the configuration loaders
    (``load_config``, ``load_train_config``; None: not given)."""
    return {label: (key, getattr(args, dest)) for label, key, dest in getattr(args, "flag_keys", [])}


def _is_dataclass_type(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


__all__ = [
    "ConfigError",
    "Flag",
    "InvalidValue",
    "Layers",
    "add_flags",
    "describe",
    "flag_values",
    "flags",
    "identity",
    "option",
    "require",
    "runtime_keys",
    "to_dict",
    "type_name",
]
