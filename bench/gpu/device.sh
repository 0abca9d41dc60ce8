#!/usr/bin/env bash
# Run circadian on the lent GPU machine (the `device` tool): stage the carried
# payload, install it, measure. See bench/gpu/README.md for the chain of calls.
#
#   bench/gpu/device.sh stage N     copy .gpu/pN/* (carried) to /tmp/circ-gpu/parts
#   bench/gpu/device.sh install     join + sha256-check the parts, unpack, pip install --target
#   bench/gpu/device.sh smoke       MLX on the GPU: device, 4-bit matmul, one chat reply
#   bench/gpu/device.sh bench       bench_compute, bench train (+ mlx_lm lora), torch+peft peer
#   bench/gpu/device.sh night       bin/circ bench memory --facts 100 --nights 1 --conditions default
# Several steps may follow one another: device.sh stage 3 install smoke bench
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
G=/tmp/circ-gpu
OUT="${OUT:-$G/out}"
mkdir -p "$G/parts" "$OUT"
export PYTHONUNBUFFERED=1
env_setup() {
    export PYTHONPATH="$G/site:$repo"
    export CIRCADIAN_PYTHON="$(command -v python3)"
    export CIRCADIAN_MODELS="$G/payload/models"
    # MiniLM (91 MB float32) is not carried: ingest embeds with the chat model.
    export CIRCADIAN_EMBEDDER=chat-model
}
while [ $# -gt 0 ]; do
    step="$1"; shift
    case "$step" in
    stage)
        n="$1"; shift
        cp -v .gpu/p"$n"/* "$G/parts/" || exit 1
        [ -d .gpu/extra ] && cp -v .gpu/extra/* "$G/parts/"
        ls -la "$G/parts"
        ;;
    install)
        want="$(cat .gpu/sha256 2>/dev/null || echo "${PAYLOAD_SHA256:-}")"
        cat "$G"/parts/payload.part? > "$G/payload.tar"
        got="$(sha256sum "$G/payload.tar" | cut -d' ' -f1)"
        if [ "$got" != "$want" ]; then echo "install: sha256 $got != $want (partial payload?)"; fi
        mkdir -p "$G/payload"
        tar xf "$G/payload.tar" -C "$G/payload" 2>&1 | tail -2
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$G/site" "$G"/payload/.whl/*.whl "$G"/parts/*.whl 2>&1 | tail -3
        ls "$G/site" | head -50
        ;;
    smoke)
        env_setup
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/smoke.txt"
        python3 - <<'EOF' 2>&1 | tee -a "$OUT/smoke.txt"
import time, mlx.core as mx
print("mlx", mx.__version__, "default", mx.default_device(), "cuda", mx.cuda.is_available())
w = mx.random.normal((4096, 4096)); x = mx.random.normal((8, 4096))
wq, s, b = mx.quantize(w, group_size=64, bits=4)
ref = x @ mx.dequantize(wq, s, b, group_size=64, bits=4).T
y = mx.quantized_matmul(x, wq, s, b, transpose=True, group_size=64, bits=4)
print("qmm rel err", float(mx.linalg.norm(y - ref) / mx.linalg.norm(ref)))
from services.lib.models.compute import load_for_serving, current_backend
from services.common.paths import resolve_model_dir
from services.trainer.memory_budget import resolve_compute, available_memory_bytes
print("backend", current_backend(), "trainer auto ->", resolve_compute("auto"), "avail", available_memory_bytes())
try:
    from services.common import hostinfo
    print("hostinfo", hostinfo.describe())
except Exception as exc:
    print("hostinfo failed:", repr(exc))
m, tok, info = load_for_serving(resolve_model_dir("smollm2-135m-instruct"), "auto")
print(info)
from mlx_lm import generate
t = time.perf_counter(); print(repr(generate(m, tok, "What is the capital of France?", max_tokens=16)), time.perf_counter() - t)
EOF
        ;;
    bench)
        env_setup
        python3 bench/bench_compute.py --reps 3 --configs 4bit,float32_openblas > "$OUT/compute.json" 2> "$OUT/compute.err"
        echo "compute rc=$?"; tail -c 1500 "$OUT/compute.json"
        python3 bench/bench_compute.py --reps 3 --prompt-tokens 1024 --configs 4bit,float32_openblas > "$OUT/compute1024.json" 2>> "$OUT/compute.err"
        echo "compute1024 rc=$?"
        bin/circ bench train > "$OUT/train.json" 2> "$OUT/train.err"
        echo "train rc=$?"; tail -c 2500 "$OUT/train.json"; tail -5 "$OUT/train.err"
        python3 bench/bench_train_torch.py > "$OUT/torch.json" 2> "$OUT/torch.err"
        echo "torch rc=$?"; cat "$OUT/torch.json"; tail -5 "$OUT/torch.err"
        ;;
    night)
        env_setup
        timeout "${NIGHT_TIMEOUT:-570}" bin/circ bench memory --facts 100 --nights 1 --conditions default \
            --json --out "$OUT/memory" --keep > "$OUT/memory.json" 2> "$OUT/memory.err"
        echo "memory rc=$?"; tail -c 3000 "$OUT/memory.json"; tail -20 "$OUT/memory.err"
        for f in $(ls -d /tmp/cm-* /tmp/circ-bench-* 2>/dev/null); do
            tar czf "$OUT/night-logs.tgz" -C "$f" data/logs 2>/dev/null && break
        done
        ;;
    *) echo "unknown step $step"; exit 2 ;;
    esac
done
