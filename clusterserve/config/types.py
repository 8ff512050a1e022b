"""Value parsers for settings.

Each parser takes a raw value, either a string (from the command line or
``CLUSTERSERVE_CMD_ARGS``) or a native value (from TOML or a Python config
file), and returns the typed value or raises ``ValueError`` with a message
that completes the sentence "setting 'x' ...: <message>".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Parser = Callable[[Any], Any]
Value = TypeVar("Value")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {raw!r}")


def integer(minimum: int | None = None, *, octal_strings: bool = False) -> Callable[[Any], int]:
    """An int, at least ``minimum``; ``octal_strings`` accepts '0o22'/'022'."""

    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError(f"expected an integer, got {raw!r}")
        if isinstance(raw, int):
            value = raw
        elif isinstance(raw, str):
            text = raw.strip()
            try:
                if octal_strings and text.startswith("0") and text.isdigit():
                    value = int(text, 8)
                else:
                    value = int(text, 0 if octal_strings else 10)
            except ValueError:
                raise ValueError(f"expected an integer, got {raw!r}") from None
        else:
            raise ValueError(f"expected an integer, got {raw!r}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def number(minimum: float = 0.0) -> Callable[[Any], float]:
    """A float (seconds), at least ``minimum``."""

    def parse(raw: Any) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError(f"expected a number, got {raw!r}")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum:g}, got {value:g}")
        return value

    return parse


def text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {raw!r}")
    return raw


def choice(options: Sequence[str], aliases: dict[str, str] | None = None) -> Callable[[Any], str]:
    aliases = aliases or {}

    def parse(raw: Any) -> str:
        value = text(raw)
        value = aliases.get(value, value)
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}; got {raw!r}")
        return value

    return parse


def string_list(item: Parser = text, *, comma_separated: bool = False) -> Callable[[Any], list[Any]]:
    """A list of strings; a single string is one item, or comma-split."""

    def parse(raw: Any) -> list[Any]:
        if isinstance(raw, str):
            items: list[Any] = [p.strip() for p in raw.split(",")] if comma_separated else [raw]
            items = [p for p in items if p != ""]
        elif isinstance(raw, (list, tuple)):
            items = []
            for element in raw:
                items.extend(parse(element) if comma_separated else [element])
        else:
            raise ValueError(f"expected a list of strings, got {raw!r}")
        return [item(p) for p in items]

    return parse


def mapping(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"expected a table (a dict), got {raw!r}")
    return dict(raw)


def env_assignment(raw: Any) -> str:
    value = text(raw)
    if "=" not in value or value.startswith("="):
        raise ValueError(f"expected KEY=VALUE, got {raw!r}")
    return value


def hook(raw: object) -> Callable[..., Any] | None:
    if raw is None or callable(raw):
        return raw
    raise ValueError(f"expected a callable, got {raw!r}")


def optional(parse: Callable[[Any], Value]) -> Callable[[Any], Value | None]:
    """None, or what ``parse`` accepts."""

    def parse_optional(raw: Any) -> Value | None:
        return None if raw is None else parse(raw)

    return parse_optional


optional_text = optional(text)


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "k": 2**10, "m": 2**20, "g": 2**30}


def size(raw: Any) -> int:
    """Bytes, from an int or a string such as '512MB', '1GiB' or '300M' (0 = no limit)."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if isinstance(raw, str):
        text_value = raw.strip().lower().replace(" ", "")
        number = text_value.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text_value[len(number):]
        if number.replace(".", "", 1).isdigit() and unit in _SIZE_UNITS:
            return int(float(number) * _SIZE_UNITS[unit])
    raise ValueError(f"expected a size such as 512MB or 1GiB, got {raw!r}")
