"""Checks of single settings, each raising ConfigError that names the setting by its flag (light: no
torch, so the command line can check what ``evaluate`` is given without importing a simulator)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from neurodeploy.errors import ConfigError, did_you_mean


def choice(flag: str, value: Any, choices: tuple) -> Any:
    """``value`` if it is one of ``choices``; else ConfigError, with the closest choice when there is one."""
    if value not in choices:
        raise ConfigError(f"{flag} {value!r} is not one of {', '.join(map(str, choices))}"
                          f"{did_you_mean(value, choices)}")
    return value


def whole(flag: str, value: Any, minimum: int, maximum: int | None = None, optional: bool = False) -> Any:
    """A whole number in [minimum, maximum] (None allowed when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{flag} must be a whole number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f"{flag} must be {bound}, got {value}")
    return value


def number(flag: str, value: Any, low: float, high: float | None = None, low_open: bool = False,
           high_open: bool = False, optional: bool = False) -> Any:
    """A finite number in the interval given by ``low``, ``high`` and whether each end is open."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value!r}")
    below = value <= low if low_open else value < low
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {'inf' if high is None else f'{high:g}'}" \
                   f"{')' if high_open or high is None else ']'}"
        raise ConfigError(f"{flag} must lie in {interval}, got {value:g}")
    return value


def existing(flag: str, value: str | None, folder: bool) -> str | None:
    if value is None:
        return None
    path = Path(value)
    if folder and not path.is_dir():
        raise ConfigError(f"{flag} {value}: no such folder")
    if not folder and not path.is_file():
        raise ConfigError(f"{flag} {value}: no such file")
    return value
