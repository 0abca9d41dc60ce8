"""The configuration is checked, key by key, when it is loaded: one line names where, what and the fix.

Every key of every section is exercised (the lists come from the Struct
itself, so a new key is covered the day it is added): a value of the wrong
type, and values just past each bound, from the file, from the environment,
and from a command-line flag.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec.inspect as mi
import pytest

from services.cli.flags import resolve_with_flags
from services.common.config import Config, ConfigError, load_config


def _keys() -> list[tuple[str, str, Any]]:
    """(section, key, msgspec type info) for every key; top-level keys have section ''."""
    keys = []
    for field in mi.type_info(Config).fields:
        if isinstance(field.type, mi.StructType):
            keys += [(field.name, sub.name, sub.type) for sub in field.type.fields]
        else:
            keys.append(("", field.name, field.type))
    return keys


KEYS = _keys()


def _wrong_type(info: Any) -> Any:
    if isinstance(info, mi.StrType | mi.LiteralType):
        return ["not", "text"]
    return "not-a-number" if not isinstance(info, mi.BoolType) else "maybe"


def _out_of_range(info: Any) -> list[Any]:
    values: list[Any] = []
    if isinstance(info, mi.IntType | mi.FloatType):
        step = 1 if isinstance(info, mi.IntType) else 1e-6
        for bound, outside in ((info.ge, -step), (info.gt, 0), (info.le, step), (info.lt, 0)):
            if bound is not None:
                values.append(bound + outside)
    if isinstance(info, mi.LiteralType):
        values.append("no-such-choice")
    if isinstance(info, mi.StrType) and info.min_length:
        values.append("")
    return values


def _dotted(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "circadian.toml"
    path.write_text("")
    monkeypatch.setenv("CIRCADIAN_CONFIG", str(path))
    for name in list(os.environ):
        if name.startswith("CIRCADIAN_") and name not in ("CIRCADIAN_CONFIG", "CIRCADIAN_HOME"):
            monkeypatch.delenv(name)
    yield path


def _write(path: Path, section: str, key: str, value: Any) -> None:
    literal = json.dumps(value)  # strings, numbers and lists of strings are TOML as JSON writes them
    path.write_text(f"[{section}]\n{key} = {literal}\n" if section else f"{key} = {literal}\n")


def _error(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(**kwargs)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_the_defaults_are_valid(config_file: Path) -> None:
    assert load_config() == Config()


def test_the_shipped_config_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.common.paths import REPO_ROOT

    monkeypatch.setenv("CIRCADIAN_CONFIG", str(REPO_ROOT / "etc" / "circadian.toml"))
    assert isinstance(load_config(), Config)


@pytest.mark.parametrize(("section", "key", "info"), KEYS, ids=[_dotted(s, k) for s, k, _ in KEYS])
def test_a_wrong_type_in_the_file_names_the_file_and_key(config_file: Path, section: str, key: str,
                                                          info: Any) -> None:
    _write(config_file, section, key, _wrong_type(info))
    message = _error()
    assert message.startswith(f"{config_file}: {_dotted(section, key)}")
    assert "default" in message


@pytest.mark.parametrize(("section", "key", "info"), [k for k in KEYS if _out_of_range(k[2])],
                         ids=[_dotted(s, k) for s, k, i in KEYS if _out_of_range(i)])
def test_values_past_each_bound_are_refused(config_file: Path, section: str, key: str, info: Any) -> None:
    for value in _out_of_range(info):
        _write(config_file, section, key, value)
        message = _error()
        assert f"{_dotted(section, key)} = {value!r}" in message, message


# Keys whose value is checked by more than its type (a str field with a grammar).
CHECKED_TEXT = {("trainer", "window"): "25:00-02:00", ("trainer", "teacher_url"): "ftp://example.org/v1"}


def _bad_env_value(section: str, key: str, info: Any) -> str | None:
    """A string that must be refused for this key, or None for free text (every string is valid)."""
    if (section, key) in CHECKED_TEXT:
        return CHECKED_TEXT[section, key]
    if isinstance(info, mi.StrType):
        return "" if info.min_length else None
    if isinstance(info, mi.LiteralType):
        return "no-such-choice"
    return _wrong_type(info)


@pytest.mark.parametrize(("section", "key", "info"), [k for k in KEYS if k[0]],
                         ids=[_dotted(s, k) for s, k, _ in KEYS if s])
def test_a_bad_environment_value_names_the_variable(config_file: Path, monkeypatch: pytest.MonkeyPatch,
                                                     section: str, key: str, info: Any) -> None:
    bad = _bad_env_value(section, key, info)
    if bad is None:
        pytest.skip(f"{section}.{key} is free text: every string is valid")
    variable = f"CIRCADIAN_{section.upper()}_{key.upper()}"
    monkeypatch.setenv(variable, bad)
    message = _error()
    assert message.startswith(f"the environment variable {variable}: {section}.{key}"), message


def test_an_unknown_key_lists_the_known_ones(config_file: Path) -> None:
    config_file.write_text("[trainer]\nrnak = 3\n")
    message = _error()
    assert message.startswith(f"{config_file}: trainer.rnak = 3: unknown key")
    assert "rank" in message


def test_an_unknown_section_is_refused(config_file: Path) -> None:
    config_file.write_text("[traner]\nrank = 3\n")
    assert "traner" in _error()


def test_a_window_that_cannot_be_read_is_refused_at_load(config_file: Path) -> None:
    config_file.write_text('[trainer]\nwindow = "25:00-02:00"\n')
    message = _error()
    assert "trainer.window = '25:00-02:00'" in message and "02:00-05:00" in message


def test_invalid_toml_says_so(config_file: Path) -> None:
    config_file.write_text("[chat\n")
    assert "not valid TOML" in _error()


def test_a_flag_overrides_the_environment_and_the_file(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file.write_text("[chat]\ntemperature = 0.3\n")
    monkeypatch.setenv("CIRCADIAN_CHAT_TEMPERATURE", "0.5")
    assert load_config().chat.temperature == 0.5
    resolved = resolve_with_flags({"chat.temperature": ("--temperature", 0.9), "chat.max_tokens": ("--max-tokens", None)})
    assert resolved.chat.temperature == 0.9
    assert resolved.chat.max_tokens == Config().chat.max_tokens  # an unset flag overrides nothing


def test_a_bad_flag_names_the_flag(config_file: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_with_flags({"chat.temperature": ("--temperature", -1.0)})
    assert str(caught.value).startswith("the flag --temperature: chat.temperature = -1.0")
