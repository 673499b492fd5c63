"""Config values from TOML or the environment, turned into a field's real type.

Dispatch is on the type itself (``bool``, ``float``, ``int``, ``str``, ``tuple[str, ...]``,
``Secret``, each optionally ``| None``), read with typing.get_type_hints, never on the
spelling of an annotation. Errors are ValueError/TypeError without the value (it may be
a secret); config.py prefixes the key.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Callable
from typing import Any

from wgsyncd.state import Secret


def _to_bool(value: Any) -> bool:
    """true/false, or the strings an environment variable would hold (1/0, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _to_float(value: Any) -> float:
    """A finite number: nan passes every "> 0" check by failing it silently, inf overflows later."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _to_int(value: Any) -> int:
    """A whole number (3.0 is one, 3.5 and true are not)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("expected a whole number")
    try:
        return int(value)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _to_strings(value: Any) -> tuple[str, ...]:
    """A TOML list of strings, or one string split at commas and spaces (environment)."""
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


# one coercion per field type that the config dataclasses use
_COERCE: dict[Any, Callable[[Any], Any]] = {
    bool: _to_bool,
    float: _to_float,
    int: _to_int,
    tuple: _to_strings,
    str: _to_str,
    Secret: lambda value: Secret(_to_str(value)),
}


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's field types: its annotations are strings (``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def to_type(kind: Any, value: Any) -> Any:
    """``value`` as ``kind``; ``X | None`` takes "" (and None) as None: an empty variable unsets it."""
    members = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    optional = type(None) in members
    (base,) = [m for m in members if m is not type(None)]
    if optional and (value is None or value == ""):
        return None
    return _COERCE[typing.get_origin(base) or base](value)
