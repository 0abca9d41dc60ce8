"""Command-line flags that override configuration keys, validated by the config's own rules.

The README's precedence is flag > environment > file > defaults. A flag is
resolved through :func:`load_config` like every other layer, so a bad value
(``circ-chat --temperature -1``) gets the same one-line error naming the flag,
the key and the fix, before anything is sent to a daemon.
"""

from __future__ import annotations

from typing import Any

from services.common.config import Config, load_config


def resolve_with_flags(flags: dict[str, tuple[str, Any]]) -> Config:
    """``{"chat.temperature": ("--temperature", 0.7), ...}`` -> the resolved Config.

    Flags left unset (None) do not override anything. Raises ConfigError.
    """
    overrides: dict[str, Any] = {}
    for key, (_flag, value) in flags.items():
        if value is None:
            continue
        section, _, name = key.partition(".")
        overrides.setdefault(section, {})[name] = value
    return load_config(overrides, flag_names={key: flag for key, (flag, _v) in flags.items()})
