"""Range checks for the config dataclasses, with errors that name the field, the value and what is allowed."""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """An invalid config value. ``owner`` is the dataclass, ``field`` its field."""

    def __init__(self, owner: str, field: str, value: Any, allowed: str):
        self.owner, self.field, self.value, self.allowed = owner, field, value, allowed
        super().__init__(f"{owner}.{field}={value!r} is invalid: expected {allowed}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, nan or inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check(ok: bool, owner: str, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(owner, field, value, allowed)
