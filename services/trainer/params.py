"""The training run's parameters, with defaults tuned for learning facts.

mlx-lm's LoRA defaults (16 layers, lr 1e-5, batch 4, 1000 iterations, the
prompt trained on) target task tuning on large datasets. circadian trains a
few hundred short question/answer pairs a night so that the model *knows*
them. Measured on the embedded SmolLM2-135M (DESIGN.md "Memory quality"):
rank 8 on all 30 layers, lr 1e-4, prompt masked, 300 single-example steps
learned 18/20 facts (asked in unseen wordings) in ~150 s on a 2-core CPU.

This Struct travels to the worker process as JSON (``--params``).
"""

from __future__ import annotations

import msgspec

COMPUTE_CHOICES = ("auto", "float32", "quantized")
OBJECTIVES = ("sft", "distill")


class TrainParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # LoRA rank: 8 holds a night of facts on a 135M model; more rank mostly
    # adds capacity to forget with.
    rank: int = 8
    # mlx-lm's LoRA scale (the update is scale * x @ A @ B; PEFT's alpha/rank).
    # mlx-lm's 20.0, kept: the lr 1e-4 measurement above was made with it.
    scale: float = 20.0
    # No dropout: a fact is seen a few times a night; dropping inputs only
    # slows learning it (and makes a resumed run differ from an unbroken one).
    dropout: float = 0.0
    # Transformer blocks that get LoRA layers, counted from the last; -1 = all.
    # Facts live in the MLP layers throughout the network, not just the top.
    num_layers: int = -1
    # Adam's learning rate, constant (no schedule: too few steps to need one).
    # The trainer passes trainer.learning_rate (1e-5, chosen by the memory
    # benchmark's sweep: 1e-4 learns a little more and damages much more).
    lr: float = 1e-5
    # Optimizer steps. ~300 single-example steps learned the measured facts;
    # more mostly costs general ability (the canary gate watches that).
    steps: int = 300
    # Examples per step. 1: short QA pairs, and the measurement used 1.
    batch_size: int = 1
    # Longer examples are truncated (and dropped when the prompt alone is
    # this long, since nothing would be left to learn from).
    max_seq_len: int = 256
    # Train only on the assistant's reply: the model should learn answers,
    # not to predict questions.
    mask_prompt: bool = True
    # Seeds LoRA's initialisation and the example order (reproducible runs).
    seed: int = 0
    # A progress line every N steps (the trainer daemon rate-limits events).
    steps_per_report: int = 5
    # A resumable checkpoint every N steps: ~30 s of CPU work at risk, a
    # ~10 MB write each time on the embedded model.
    steps_per_checkpoint: int = 50
    # "auto": the float32 compute copy with OpenBLAS on a CPU backend (~10x
    # faster there), the 4-bit weights (QLoRA) on Metal or CUDA.
    compute: str = "auto"
    # Recompute activations in the backward pass: less memory, ~30% slower.
    grad_checkpoint: bool = False
    # Share of the training items that are self-distilled anchors (the base
    # model's own replies to general prompts, services.trainer.anchors); 0: none.
    anchor_share: float = 0.0
    # "sft": cross-entropy on the answers. "distill": on an example that
    # carries its memories (``context``), KL(teacher || student) over the
    # answer tokens, the teacher being the bare model reading the memories in
    # chat's recall prompt; the anchors are matched to the bare model's
    # distribution (services.trainer.distill, services.trainer.losses).
    objective: str = "sft"
    # The teacher's top-k tokens kept per answer position (the rest: one bucket).
    distill_top_k: int = 32
    # The stop rule (services.trainer.stop_rule): stop once the night's facts
    # are learned (their value the top choice on the probe, probe.jsonl) or
    # the probe's loss plateaus; ``steps`` is then the cap. Off: train ``steps``.
    early_stop: bool = False
    # Steps between two checks; 0: twice an epoch.
    check_every: int = 0
    # The share of the probe's facts that must be learned to stop.
    learned_share: float = 1.0
    # Checks without the probe loss improving before it counts as a plateau.
    patience: int = 2

    def __post_init__(self) -> None:
        problems = []
        if self.rank < 1:
            problems.append("rank must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must be in [0, 1)")
        if self.num_layers == 0 or self.num_layers < -1:
            problems.append("num_layers must be -1 (all) or >= 1")
        if not self.lr > 0:
            problems.append("lr must be > 0")
        if self.steps < 1:
            problems.append("steps must be >= 1")
        if self.batch_size < 1:
            problems.append("batch_size must be >= 1")
        if self.max_seq_len < 8:
            problems.append("max_seq_len must be >= 8")
        if self.steps_per_report < 1 or self.steps_per_checkpoint < 1:
            problems.append("steps_per_report and steps_per_checkpoint must be >= 1")
        if not 0.0 <= self.anchor_share <= 0.9:
            problems.append("anchor_share must be in [0, 0.9]")
        if self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {', '.join(OBJECTIVES)}")
        if not 1 <= self.distill_top_k <= 1024:
            problems.append("distill_top_k must be in [1, 1024]")
        if self.check_every < 0 or self.patience < 1:
            problems.append("check_every must be >= 0 (0: twice an epoch) and patience >= 1")
        if not 0.0 < self.learned_share <= 1.0:
            problems.append("learned_share must be in (0, 1]")
        if self.compute not in COMPUTE_CHOICES:
            problems.append(f"compute must be one of {', '.join(COMPUTE_CHOICES)}")
        if problems:
            raise ValueError("; ".join(problems))

    def lora_parameters(self) -> dict[str, float]:
        """The ``lora_parameters`` of mlx-lm's adapter_config.json."""
        return {"rank": self.rank, "scale": self.scale, "dropout": self.dropout}

    def trajectory_key(self) -> dict[str, object]:
        """The fields that decide the weights after step N (a checkpoint is only
        resumable under the same ones; ``steps`` may grow, reporting may change)."""
        return {k: getattr(self, k) for k in (
            "rank", "scale", "dropout", "num_layers", "lr", "batch_size",
            "max_seq_len", "mask_prompt", "seed", "anchor_share", "objective", "distill_top_k")}

    def stop_key(self) -> dict[str, object]:
        """The fields that decide where the run stops (a finished run is reused only under the same ones)."""
        return {k: getattr(self, k) for k in ("steps", "early_stop", "check_every", "learned_share", "patience")}

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> TrainParams:
        """Decode and validate; raises ValueError with the reason."""
        try:
            return msgspec.json.decode(text, type=cls)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from exc
        except msgspec.DecodeError as exc:
            raise ValueError(f"--params is not valid JSON: {exc}") from exc
