#!/usr/bin/env python
"""The torch + PEFT peer of ``bench/bench_train.py``: LoRA on the same data, same GPU.

Usage: python bench/bench_train_torch.py [--steps N] [--dtype bfloat16|float32] [--model DIR]

Same 20 examples as bench_train (its ``build_dataset``), tokenized with
mlx-lm's ChatDataset exactly as our worker and ``mlx_lm lora`` see them
(prompt masked, batch size 1, no padding), same LoRA rank / scale / lr /
max_seq_len from the trainer config, LoRA on every linear layer of every
block (what mlx-lm and our worker adapt). The weights are the converted
model's, dequantized exactly (services.lib.models.compute.to_float32) and
loaded into transformers' LlamaForCausalLM, then cast to --dtype: torch has
no 4-bit kernel here (bitsandbytes is not installed), so this is plain LoRA
in bf16, the usual torch baseline, not QLoRA.

  tokens_per_s         every token trained / loop time (CUDA-synchronised)
  steady_tokens_per_s  the same from step 5 on (after cuBLAS warm-up)
  peak_gpu_bytes       torch.cuda.max_memory_allocated

Needs torch, transformers, peft and a CUDA GPU (the device machine's image);
prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WARMUP_STEPS = 5


def hf_state_dict(model_dir: Path) -> tuple[dict, object]:
    """The converted MLX model's weights, dequantized, as torch tensors with HF names."""
    from services.common.blas import preload_openblas

    preload_openblas()
    import mlx.core as mx
    import numpy as np
    import torch
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load

    from services.lib.models.compute import to_float32

    model, tokenizer = load(str(model_dir))
    to_float32(model)
    mx.eval(model.parameters())
    state = {name: torch.from_numpy(np.array(value)) for name, value in tree_flatten(model.parameters())}
    return state, tokenizer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="steps of batch size 1 (default 60: 3 epochs)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--model", type=Path, help="converted model directory (default: chat's model)")
    args = p.parse_args()

    import torch
    from bench_train import build_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from services.common.config import load_config
    from services.common.paths import resolve_model_dir

    if not torch.cuda.is_available():
        print(json.dumps({"bench": "train_torch", "status": "skipped", "reason": "no CUDA GPU"}))
        return 0
    config = load_config()
    t = config.trainer
    model_dir = args.model or resolve_model_dir(config.chat.model)
    state, tokenizer = hf_state_dict(model_dir)

    import tempfile

    from mlx_lm.tuner.datasets import ChatDataset

    examples = build_dataset(Path(tempfile.mkdtemp(prefix="bench-torch-")), config.chat.system_prompt)
    dataset = ChatDataset(examples, tokenizer, mask_prompt=True)
    rows = []
    for i in range(len(dataset)):
        ids, offset = dataset.process(dataset[i])
        rows.append((ids[: t.max_seq_len], offset))

    hf_config = json.loads((model_dir / "config.json").read_text())
    hf_config.pop("quantization", None)
    hf_config.pop("quantization_config", None)
    dtype = getattr(torch, args.dtype)
    model = LlamaForCausalLM(LlamaConfig(**hf_config))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        print(json.dumps({"bench": "train_torch", "status": "failed",
                          "reason": f"weights did not map: missing {missing[:5]}, unexpected {unexpected[:5]}"}))
        return 1
    model.tie_weights()
    model = model.to("cuda", dtype=dtype)
    lora = LoraConfig(r=t.rank, lora_alpha=t.lora_scale * t.rank, lora_dropout=0.0,
                      target_modules=TARGETS, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=t.learning_rate)

    def step(ids: list[int], offset: int) -> float:
        x = torch.tensor([ids], device="cuda")
        labels = x.clone()
        labels[:, : max(offset, 1)] = -100  # prompt masked, as mask_prompt=True
        loss = model(input_ids=x, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    torch.cuda.reset_peak_memory_stats()
    tokens = steady_tokens = 0
    losses = []
    torch.cuda.synchronize()
    start = time.perf_counter()
    steady_start = start
    generator = torch.Generator().manual_seed(0)
    order: list[int] = []
    for n in range(args.steps):
        if not order:
            order = torch.randperm(len(rows), generator=generator).tolist()
        ids, offset = rows[order.pop()]
        loss = step(ids, offset)
        tokens += len(ids)
        if n + 1 == WARMUP_STEPS:
            torch.cuda.synchronize()
            steady_start = time.perf_counter()
        elif n + 1 > WARMUP_STEPS:
            steady_tokens += len(ids)
        if (n + 1) % WARMUP_STEPS == 0:
            losses.append(round(float(loss), 4))
    torch.cuda.synchronize()
    end = time.perf_counter()
    print(json.dumps({
        "bench": "train_torch", "status": "ok", "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__, "dtype": args.dtype, "steps": args.steps, "tokens": tokens,
        "trainable_params": trainable, "loss_every_5": losses,
        "tokens_per_s": round(tokens / (end - start), 1),
        "steady_tokens_per_s": round(steady_tokens / (end - steady_start), 1) if steady_tokens else None,
        "loop_s": round(end - start, 2), "peak_gpu_bytes": torch.cuda.max_memory_allocated(),
        "params": {"rank": t.rank, "alpha": t.lora_scale * t.rank, "lr": t.learning_rate,
                   "max_seq_len": t.max_seq_len, "targets": TARGETS},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
