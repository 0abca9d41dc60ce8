"""The resolved configuration, as one typed Struct.

Precedence: command-line flag > environment (``CIRCADIAN_<SECTION>_<KEY>``,
e.g. ``CIRCADIAN_CHAT_TEMPERATURE=0.2``) > the TOML file > defaults here.
The TOML file is ``$CIRCADIAN_CONFIG`` if set, else ``<home>/circadian.toml``
if present, else the repository's ``etc/circadian.toml``.

A bad value stops the program with one line naming the file, the key and the
fix, never a traceback (:class:`ConfigError`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import msgspec

from services.common.paths import REPO_ROOT, home_from_env


class ConfigError(Exception):
    """A configuration value is invalid; the message names file, key and fix."""


class ChatConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Path to an mlx-lm model directory (relative paths: to the models dir).
    model: str = "smollm2-135m-instruct"
    # auto: float32 copy + OpenBLAS on CPU, 4-bit on Metal/CUDA (DESIGN.md).
    compute: Literal["auto", "float32", "quantized"] = "auto"
    system_prompt: str = "You are a helpful assistant. Answer briefly and truthfully."
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    # Sessions beyond this many are evicted least-recently-used (KV caches
    # cost memory: ~0.7 MB per 100 tokens on the embedded model).
    max_sessions: int = 16
    # How long chat keeps retrying to log a finished turn before telling the
    # client it failed (supervisord restarts a killed eventlog in ~1 s).
    log_retry_s: float = 30.0
    # Refuse requests whose prompt would pass this many tokens.
    max_context_tokens: int = 4096
    # Memory recall: ask ingest for the top memories for each user turn and
    # put them in front of the message. Past the budget chat answers without
    # them (and says so in the turn record).
    recall: bool = True
    recall_k: int = 4
    recall_min_score: float = 0.35
    recall_timeout_ms: float = 400.0
    # Redact PII in a turn before it is even logged (the raw text then never
    # reaches the disk). Off by default: the raw log is the user's own record.
    redact_before_log: bool = False


class EventlogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Each row carries sha256(previous hash + row) so `circ log verify` can
    # prove the history was not edited.
    hash_chain: bool = True
    # Most events committed in one transaction (one fsync) during a burst.
    group_commit_max: int = 1000


class TrainerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # The nightly sleep window, local time "HH:MM-HH:MM" (may wrap midnight);
    # empty: no scheduled sleeps (use `circ sleep`).
    window: str = "02:00-05:00"
    # A scheduled sleep needs at least this many new trainable memories.
    min_new_memories: int = 5
    # Also sleep after the user has been idle this long (0: off).
    idle_minutes: int = 0
    # Training defaults tuned for fact learning on small models by the memory
    # benchmark's sweep (README "Does it remember?").
    # Optimizer steps; 0 = ``epochs`` passes over the night's dataset, at most
    # ``max_steps`` (a fixed count over- or under-teaches as nights vary).
    steps: int = 0
    epochs: float = 3.0
    max_steps: int = 3000
    rank: int = 8
    # 1e-5 (x3 epochs): 80% of facts on held-out wording for -7.5 canary
    # points, +3.7% perplexity; 1e-4 learnt 90% but cost -30 points, +43%.
    learning_rate: float = 1e-5
    # mlx-lm's LoRA scale (PEFT's alpha/rank): the update is scale * x @ A @ B.
    lora_scale: float = 20.0
    batch_size: int = 1
    num_layers: int = -1
    # Share of training items that are the base model's own replies to general
    # prompts (services.trainer.anchors): holds general ability in place.
    anchor_share: float = 0.0
    max_seq_len: int = 256
    phrasings_per_fact: int = 5
    # Extra rewordings per fact written by the model itself, kept only when
    # they still ask about the fact and the answer still holds the value
    # (services.trainer.paraphrase); 0: rule templates only.
    model_paraphrases: int = 2
    # Share of earlier nights' examples mixed in to keep them.
    replay_share: float = 0.3
    # Adapters kept besides pinned ones, the current and the previous one.
    keep_last: int = 5
    # How long a sleep waits for the heavy-run lock before giving up.
    lock_timeout_s: float = 600.0


class EvaluatorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # The gates (services.evaluator.core.Thresholds explains each). Set for
    # the embedded 135M model, where the memory benchmark measured that no
    # setting teaches facts without costing a few canary points and some
    # perplexity (README "Does it remember?"): they let a night that learns
    # through, and reject one that damages (lr 1e-4: -30 points, +43%). A
    # larger model can afford the goals: 1 point and 1%.
    min_fact_recall: float = 0.5
    max_canary_drop_pts: float = 10.0
    max_ppl_drift_pct: float = 10.0
    max_false_recall: float = 0.05
    # ... or at most this much above the base model's own false recall.
    max_false_recall_rise: float = 0.1
    max_format_drop: float = 0.3
    lock_timeout_s: float = 600.0


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    chat: ChatConfig = ChatConfig()
    eventlog: EventlogConfig = EventlogConfig()
    trainer: TrainerConfig = TrainerConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()


def config_file() -> Path | None:
    explicit = os.environ.get("CIRCADIAN_CONFIG")
    if explicit:
        return Path(explicit)
    for candidate in (home_from_env() / "circadian.toml", REPO_ROOT / "etc" / "circadian.toml"):
        if candidate.is_file():
            return candidate
    return None


def _env_overrides() -> dict[str, Any]:
    """Nested dict of ``CIRCADIAN_<SECTION>_<KEY>`` values (strings, converted later)."""
    overrides: dict[str, Any] = {}
    sections = {name for name, field in _struct_fields(Config).items() if field}
    for key, value in os.environ.items():
        if not key.startswith("CIRCADIAN_"):
            continue
        rest = key[len("CIRCADIAN_") :].lower()
        section, _, name = rest.partition("_")
        if section in sections and name:
            overrides.setdefault(section, {})[name] = value
        elif rest == "log_level":
            overrides["log_level"] = value
    return overrides


def _struct_fields(cls: type) -> dict[str, bool]:
    """Field name -> whether the field is itself a Struct (a section)."""
    info = msgspec.structs.fields(cls)
    return {f.name: isinstance(f.default, msgspec.Struct) for f in info}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = msgspec.toml.decode(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; unset CIRCADIAN_CONFIG or create it") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax or delete the file") from None
    return data


def load_config(overrides: dict[str, Any] | None = None) -> Config:
    """Resolve the configuration: defaults < file < environment < ``overrides``."""
    path = config_file()
    layers: dict[str, Any] = _read_file(path) if path else {}
    env = _env_overrides()
    merged = _merge(_merge(layers, env), overrides or {})
    try:
        # str_values lets environment strings ("0.2", "true") become numbers/bools.
        return msgspec.convert(merged, Config, strict=False)
    except msgspec.ValidationError as exc:
        origin = str(path) if path else "configuration"
        if env:
            origin += " (or a CIRCADIAN_* environment variable)"
        raise ConfigError(
            f"{origin}: {exc}; fix that value or remove it to use the default"
        ) from None
