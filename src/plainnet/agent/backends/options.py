"""Reading a backend's settings (from etcd's network config or the agent's flags):
one line that names the setting when a value is wrong. Dependency-free, so a host-gw
agent does not load a validation library for this."""

from __future__ import annotations

from collections.abc import Mapping

from plainnet.errors import ConfigError


def int_option(
    backend: str, options: Mapping[str, object], key: str, label: str, default: int, high: int
) -> int:
    value = options.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{label} {value!r}: expected a whole number ({backend} backend)")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{label} {value!r}: expected a whole number") from None
    if not 1 <= number <= high:
        raise ConfigError(f"{label} {number}: out of range (1 to {high})")
    return number


def unknown_options(
    backend: str, options: Mapping[str, object], known: tuple[str, ...] = ()
) -> None:
    extra = sorted(set(options) - set(known))
    if extra:
        raise ConfigError(f"the {backend} backend has no setting {extra[0]!r}")
