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
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from services.common.paths import REPO_ROOT, home_from_env


class ConfigError(Exception):
    """A configuration value is invalid; the message names file, key and fix."""


# Ranges every key is checked against when the config is loaded (in each process and in
# `circ up`), so a bad value stops at start with one line instead of failing at 02:00.
PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]
Share = Annotated[float, Meta(ge=0, lt=1)]  # a fraction of a whole that must leave something
Fraction = Annotated[float, Meta(ge=0, le=1)]
NonEmpty = Annotated[str, Meta(min_length=1)]


class ChatConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Path to an mlx-lm model directory (relative paths: to the models dir).
    model: NonEmpty = "smollm2-135m-instruct"
    # auto: float32 copy + OpenBLAS on CPU, 4-bit on Metal/CUDA (DESIGN.md).
    compute: Literal["auto", "float32", "quantized"] = "auto"
    system_prompt: str = "You are a helpful assistant. Answer briefly and truthfully."
    max_tokens: Annotated[int, Meta(ge=1, le=8192)] = 256  # chat refuses more per turn
    temperature: Annotated[float, Meta(ge=0, le=5)] = 0.0
    top_p: Annotated[float, Meta(gt=0, le=1)] = 1.0
    # Sessions beyond this many are evicted least-recently-used (KV caches
    # cost memory: ~0.7 MB per 100 tokens on the embedded model).
    max_sessions: PositiveInt = 16
    # How long chat keeps retrying to log a finished turn before telling the
    # client it failed (supervisord restarts a killed eventlog in ~1 s).
    log_retry_s: PositiveFloat = 30.0
    # Refuse requests whose prompt would pass this many tokens.
    max_context_tokens: Annotated[int, Meta(ge=64)] = 4096
    # Memory recall: ask ingest for the top memories for each user turn and
    # put them in front of the message. Past the budget chat answers without
    # them (and says so in the turn record).
    recall: bool = True
    recall_k: Annotated[int, Meta(ge=1, le=50)] = 4
    recall_min_score: Annotated[float, Meta(ge=-1, le=1)] = 0.35
    recall_timeout_ms: PositiveFloat = 400.0
    # Redact PII in a turn before it is even logged (the raw text then never
    # reaches the disk). Off by default: the raw log is the user's own record.
    redact_before_log: bool = False


class EventlogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Each row carries sha256(previous hash + row) so `circ log verify` can
    # prove the history was not edited.
    hash_chain: bool = True
    # Most events committed in one transaction (one fsync) during a burst.
    group_commit_max: PositiveInt = 1000


class TrainerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # The nightly sleep window, local time "HH:MM-HH:MM" (may wrap midnight);
    # empty: no scheduled sleeps (use `circ sleep`).
    window: str = "02:00-05:00"
    def __post_init__(self) -> None:
        from services.common.clock_window import WindowError, parse_window

        try:
            parse_window(self.window)
        except WindowError as exc:
            raise ValueError(f"window: {exc}") from None
        if self.teacher_url:
            from urllib.parse import urlparse

            parsed = urlparse(self.teacher_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError("teacher_url: must be an http:// or https:// URL with a host, "
                                 "e.g. http://127.0.0.1:8080/v1 (empty: no teacher)")
            if parsed.username or parsed.password:
                raise ValueError("teacher_url: must not carry credentials; put the key in "
                                 "CIRCADIAN_TEACHER_API_KEY")

    # A scheduled sleep needs at least this many new trainable memories.
    min_new_memories: NonNegativeInt = 5
    # Also sleep after the user has been idle this long (0: off).
    idle_minutes: NonNegativeInt = 0
    # Training defaults tuned for fact learning on small models by the memory
    # benchmark's sweep (README "Does it remember?").
    # Optimizer steps; 0 = ``epochs`` passes over the night's dataset, at most
    # ``max_steps`` (a fixed count over- or under-teaches as nights vary).
    steps: NonNegativeInt = 0
    # 1.5 at 2e-5 (with abstain_share 0.1): 76% held-out on a 40-fact night in
    # half the steps of 3 x 1e-5, which fits a 100-fact night in 10 minutes.
    epochs: PositiveFloat = 1.5
    max_steps: PositiveInt = 3000
    # Learn until learned, then stop (services.trainer.stop_rule): the steps
    # above become a cap; every ``stop_check_steps`` (0: twice an epoch) the
    # night's facts are asked on one trained item each, and training stops
    # once ``stop_learned_share`` of their values are the model's top choice,
    # or the probe's loss has not improved for ``stop_patience`` checks.
    stop_when_learned: bool = True
    stop_check_steps: NonNegativeInt = 0
    stop_learned_share: Annotated[float, Meta(gt=0, le=1)] = 1.0
    stop_patience: Annotated[int, Meta(ge=1, le=100)] = 2
    rank: Annotated[int, Meta(ge=1, le=1024)] = 8
    # 2e-5 (x1.5 epochs): 76% of 40 facts on held-out wording for -6.1 canary
    # points, +4.9% perplexity (README "Does it remember?"); 1e-4 learnt 90%
    # of 10 but cost -30 points, +43%.
    learning_rate: Annotated[float, Meta(gt=0, lt=1)] = 2e-5
    # mlx-lm's LoRA scale (PEFT's alpha/rank): the update is scale * x @ A @ B.
    lora_scale: PositiveFloat = 20.0
    batch_size: PositiveInt = 1
    # -1: every layer; else how many of the last layers get LoRA.
    num_layers: Annotated[int, Meta(ge=-1)] = -1
    # Share of training items that are the base model's own replies to general
    # prompts (services.trainer.anchors): holds general ability in place.
    anchor_share: Share = 0.0
    # What the night minimises (README "Does it remember?", "Distillation"):
    # "sft" = cross-entropy on the question/answer pairs; "distill" = the
    # adapter without the memories matches the bare model reading them in
    # chat's recall prompt (KL on the answer tokens), plus KL to the bare
    # model on the anchors (anchor_share of the items).
    objective: Literal["sft", "distill"] = "sft"
    max_seq_len: Annotated[int, Meta(ge=32)] = 256
    # Weights the night trains on: auto (float32 copy + OpenBLAS on a CPU
    # backend, the stored 4-bit weights = QLoRA on Metal/CUDA), float32, or
    # quantized (QLoRA on the 4-bit weights anywhere; slow on a CPU).
    compute: Literal["auto", "float32", "quantized"] = "auto"
    phrasings_per_fact: PositiveInt = 5
    # Extra rewordings per fact written by the chat model itself, kept only
    # when they still ask about the fact and the answer still holds the value
    # (services.trainer.paraphrase); 0: rule templates only. 0 by default: the
    # embedded 135M model's were 28% usable and cost 127 s of a 100-fact night
    # (README "A 100-fact night"); 2 suits a 3B model.
    model_paraphrases: NonNegativeInt = 0
    # Share of earlier nights' examples mixed in to keep them.
    replay_share: Share = 0.3
    # Questions about never-stated keys answered "I don't know", as a share of
    # the night's question/answer examples (services.trainer.dataset). On a
    # 40-fact night 0.1 took false recall 8% -> 0 and also drifted less
    # (canary -8 vs -12 points) and learnt more (README "The schedule,
    # rewordings and abstentions").
    abstain_share: Share = 0.1
    # Adapters kept besides pinned ones, the current and the previous one.
    keep_last: NonNegativeInt = 5
    # How long a sleep waits for the heavy-run lock before giving up.
    lock_timeout_s: PositiveFloat = 600.0
    # An OpenAI-compatible endpoint (e.g. a bigger local model) that writes the
    # night's rewordings instead of the embedded model (services.trainer.teacher);
    # it receives redacted question/answer pairs only. Empty: none, offline.
    teacher_url: str = ""
    # The model name sent to the teacher (empty: "default"; Ollama & co need one).
    teacher_model: str = ""
    teacher_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    # Rewordings per fact asked of the teacher (when teacher_url is set); if it
    # fails, the night falls back to model_paraphrases (0: templates only).
    teacher_paraphrases: PositiveInt = 2


class EvaluatorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # The gates (services.evaluator.core.Thresholds explains each). Set for
    # the embedded 135M model, where the memory benchmark measured that no
    # setting teaches facts without costing a few canary points and some
    # perplexity (README "Does it remember?"): they let a night that learns
    # through, and reject one that damages (lr 1e-4: -30 points, +43%). A
    # larger model can afford the goals: 1 point and 1%.
    min_fact_recall: Fraction = 0.5
    max_canary_drop_pts: Annotated[float, Meta(ge=0, le=100)] = 10.0
    max_ppl_drift_pct: NonNegativeFloat = 10.0
    max_false_recall: Fraction = 0.05
    # ... or at most this much above the base model's own false recall.
    # 0.05, the goal, since the abstentions (0 on a 100-fact night).
    max_false_recall_rise: Fraction = 0.05
    max_format_drop: Fraction = 0.3
    lock_timeout_s: PositiveFloat = 600.0
    # How long the trainer waits for a verdict; past it the night is rejected (fail closed).
    verdict_timeout_s: PositiveFloat = 3600.0


class IngestConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Person names are what a user wants remembered ("my name is Priya", "my boss Karen"), and
    # they never leave the machine: kept by default. True: names become [NAME] too, and recall
    # by name goes through keyed hashes (services/lib/privacy/names.py). Contact and financial ids,
    # government ids, secrets and addresses are redacted in both modes.
    redact_names: bool = False


class ApiConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # The OpenAI-compatible HTTP API (services/api). Loopback only by default; any
    # other address requires the bearer token in data/keys/api.token (`circ api token`).
    host: NonEmpty = "127.0.0.1"
    # 0: any free port (the URL is in `circ status`); tests use that.
    port: Annotated[int, Meta(ge=0, le=65535)] = 8642
    # Bodies over this are refused with 413 before they are parsed.
    max_body_bytes: Annotated[int, Meta(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    # The largest max_tokens a request may ask for (chat's own limit is the context size).
    max_tokens: Annotated[int, Meta(ge=1, le=32_768)] = 2048
    # Requests answered at once; more get 429 (chat itself runs one turn at a time).
    max_concurrent: Annotated[int, Meta(ge=1, le=256)] = 16


class AlertsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # services/common/alerts.py: a failed sleep, a rejected adapter, a FATAL daemon, a full disk,
    # a missing embedder each raise one `alert.raised` event, at most one per cause per
    # ``min_interval_s``; also a desktop notification (notify-send / osascript) where one exists.
    desktop: bool = True
    # Run on every alert (split like a shell line, no shell); the alert is in the environment:
    # CIRCADIAN_ALERT_CAUSE, _MESSAGE, _KEY, _SEVERITY. Empty: no hook.
    command: str = ""
    min_interval_s: NonNegativeFloat = 3600.0
    # Free space under the data directory below this is "the disk is full".
    min_free_mb: NonNegativeInt = 1024


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    chat: ChatConfig = ChatConfig()
    ingest: IngestConfig = IngestConfig()
    eventlog: EventlogConfig = EventlogConfig()
    trainer: TrainerConfig = TrainerConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()
    alerts: AlertsConfig = AlertsConfig()
    api: ApiConfig = ApiConfig()


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


def load_config(overrides: dict[str, Any] | None = None, *, flag_names: dict[str, str] | None = None) -> Config:
    """Resolve the configuration: defaults < file < environment < ``overrides``.

    ``overrides`` come from command-line flags, nested like the file
    (``{"chat": {"temperature": 0.7}}``); ``flag_names`` maps a dotted key to the
    flag that set it (``{"chat.temperature": "--temperature"}``) so an error
    names what the user typed.
    """
    path = config_file()
    layers: dict[str, Any] = _read_file(path) if path else {}
    env = _env_overrides()
    merged = _merge(_merge(layers, env), overrides or {})
    try:
        # str_values lets environment strings ("0.2", "true") become numbers/bools.
        return msgspec.convert(merged, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), path, merged, overrides or {}, flag_names or {})) from None


_AT = re.compile(r"^(?P<what>.*) - at `\$(?P<where>[.\w\[\]]*)`$")
_UNKNOWN = re.compile(r"unknown field `(?P<name>\w+)`")
_POST_INIT = re.compile(r"^(?P<name>\w+): (?P<why>.*)$")


def _explain(error: str, path: Path | None, merged: dict[str, Any], overrides: dict[str, Any],
             flag_names: dict[str, str]) -> str:
    """One line: where the value came from (flag, variable or file), the key, what is wrong, the fix."""
    match = _AT.match(error)
    what, key = (match["what"], match["where"].lstrip(".")) if match else (error, "")
    unknown = _UNKNOWN.search(what)
    if unknown:
        key = f"{key}.{unknown['name']}" if key else unknown["name"]
        what = "unknown key"
        fix = f"remove it or correct the spelling (known keys: {_known_keys(key)})"
    else:
        named = _POST_INIT.match(what)
        if named and "." not in key and key and "`" not in what:
            key, what = f"{key}.{named['name']}", named["why"]  # a check of a whole section names its key
        fix = f"fix that value or remove it to use the default ({_default_of(key)})"
    value = _lookup(merged, key) if key else None
    shown = f"{key} = {value!r}" if value is not None and not isinstance(value, dict) else (key or "config")
    return f"{_origin(key, path, overrides, flag_names)}: {shown}: {what}; {fix}"


def _origin(key: str, path: Path | None, overrides: dict[str, Any], flag_names: dict[str, str]) -> str:
    section, _, name = key.partition(".")
    if key in flag_names and _lookup(overrides, key) is not None:
        return f"the flag {flag_names[key]}"
    variable = f"CIRCADIAN_{section.upper()}_{name.upper()}" if name else f"CIRCADIAN_{section.upper()}"
    if variable in os.environ:
        return f"the environment variable {variable}"
    return str(path) if path else "configuration"


def _lookup(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _default_of(key: str) -> str:
    node: Any = Config()
    for part in key.split("."):
        node = getattr(node, part, None)
        if node is None:
            return "see services/common/config.py"
    return repr(node)


def _known_keys(key: str) -> str:
    section = key.rpartition(".")[0]
    node: Any = Config()
    for part in filter(None, section.split(".")):
        node = getattr(node, part, None)
    if not isinstance(node, msgspec.Struct):
        return "see services/common/config.py"
    return ", ".join(f.name for f in msgspec.structs.fields(node))
