#!/usr/bin/env python
"""Memory recall latency: usearch search through MemoryIndex at 10k and 100k memories.

Usage: .venv/bin/python bench/bench_recall.py [--quick] [--queries 1000] [--k 5]
       [--data random|clustered] [--no-embed] [--wait-quiet 0]

For each size N (10k, and 100k unless ``--quick``), in a fresh temp directory:

- ``add_per_s``: bulk ``MemoryIndex.add`` in batches of 1000 (SQLite commit
  with synchronous=FULL + usearch HNSW insert), and ``single_add_ms``: one
  memory plus a cursor update per call, as ingest does per turn.
- ``search_ms``: ``MemoryIndex.search(vector, k)`` only (usearch + the
  SQLite row lookup), query vectors already computed; p50/p99/max over
  ``--queries`` queries after a warm-up. Goal: p99 <= 10 ms at 100k.
  ``search_cpu_ms`` is the same calls' CPU time (``time.thread_time``): on a
  busy shared machine wall-clock p99 mostly measures time spent waiting for
  a core, and the CPU time shows what the search itself costs.
- ``open_ms``: reopening the saved index (checksum, load, key check).

Vectors: ``random`` unit vectors (the default; the worst case for HNSW: random
384-d points are nearly equidistant, so build and search explore the most) or
``clustered`` (unit vectors around 1000 centres, closer to real sentence
embeddings). Latency is what is measured here, not retrieval quality.

``embed``: the query-embedding time, separate from the search: single-text
latency (p50/p99 over 50 chat-like queries) and batched embeddings/s (256
texts), with the BLAS in use and its measured GFLOP/s (a busy shared machine
shows up there and in ``machine``).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import emit, fail, machine_load, progress, wait_quiet  # noqa: E402

# Before anything imports mlx (the embedder does).
from services.common.blas import preload_openblas  # noqa: E402

preload_openblas()

from services.lib.memory.index import MemoryIndex, MemoryRecord  # noqa: E402

PROG = "bench_recall"
DIM = 384
BATCH = 1000
WORDS = ("my sister lives in lisbon and works as a nurse at the hospital near the river we talked "
         "about the trip to japan next spring and the budget for the new kitchen remind me "
         "tomorrow that the dentist moved my appointment").split()


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.array(samples_s) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3),
            "mean": round(float(ms.mean()), 3), "max": round(float(ms.max()), 3), "n": len(ms)}


def make_vectors(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "random":
        v = rng.standard_normal((n, DIM), dtype=np.float32)
    else:
        centres = rng.standard_normal((1000, DIM), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        v = centres[rng.integers(0, 1000, n)] + 0.08 * rng.standard_normal((n, DIM), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    vectors = make_vectors(n + args.queries + 200, args.data, rng)
    directory = Path(tempfile.mkdtemp(prefix="circ-recall-", dir="/tmp"))
    try:
        index = MemoryIndex(directory)
        texts = [" ".join(random.Random(i).choices(WORDS, k=25)) for i in range(BATCH)]
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            stop = min(n, start + BATCH)
            records = [MemoryRecord(memory_id=f"m{i}.0", seq=i, ts=float(i), route="rag",
                                    text=texts[i % BATCH]) for i in range(start, stop)]
            index.add(records, vectors[start:stop], meta={"cursor_seq": str(stop)})
            if stop % 10_000 == 0:
                progress(f"{n}: added {stop} ({stop / (time.perf_counter() - started):.0f}/s)")
        add_s = time.perf_counter() - started

        queries = vectors[n + 200:]
        for q in queries[:50]:  # warm-up: page faults, caches
            index.search(q, args.k)
        samples, cpu_samples = [], []
        for q in queries:
            c0, t0 = time.thread_time(), time.perf_counter()
            hits = index.search(q, args.k)
            samples.append(time.perf_counter() - t0)
            cpu_samples.append(time.thread_time() - c0)
            assert len(hits) == args.k
        single = []  # after the searches, so these ran on exactly n memories
        for i in range(n, n + 200):
            t0 = time.perf_counter()
            index.add([MemoryRecord(memory_id=f"m{i}.0", seq=i, route="rag", text=texts[i % BATCH])],
                      vectors[i:i + 1], meta={"cursor_seq": str(i)})
            single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        index.save()
        save_ms = (time.perf_counter() - t0) * 1000
        index.close()
        t0 = time.perf_counter()
        reopened = MemoryIndex(directory)
        open_ms = (time.perf_counter() - t0) * 1000
        status = reopened.status.action
        reopened.close()
        search = percentiles(samples)
        return {"memories": n, "add_per_s": round(n / add_s, 1), "add_total_s": round(add_s, 2),
                "single_add_ms": percentiles(single), "search_ms": search, "k": args.k,
                "search_cpu_ms": percentiles(cpu_samples),
                "p99_goal_met": search["p99"] <= 10.0, "save_ms": round(save_ms, 1),
                "open_ms": round(open_ms, 1), "open_status": status}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def bench_embed() -> dict[str, Any]:
    from services.common.blas import probe_gflops
    from services.ingest.embed import Embedder, EmbedderUnavailable

    try:
        embedder = Embedder()
    except EmbedderUnavailable as exc:
        fail(PROG, str(exc))
    rnd = random.Random(0)
    queries = [" ".join(rnd.choices(WORDS, k=rnd.randint(5, 20))) + "?" for _ in range(50)]
    turns = [" ".join(rnd.choices(WORDS, k=rnd.randint(8, 60))) for _ in range(256)]
    embedder.embed(turns[:32])  # warm-up
    single = []
    for q in queries:
        t0 = time.perf_counter()
        embedder.embed([q])
        single.append(time.perf_counter() - t0)
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        embedder.embed(turns)
        rates.append(len(turns) / (time.perf_counter() - t0))
    tokens = [embedder.token_count(t) for t in turns]
    return {"single_query_ms": percentiles(single), "batched_per_s": round(max(rates), 1),
            "batched_per_s_runs": [round(r, 1) for r in rates], "batch_size": embedder.batch_size,
            "mean_tokens_per_turn": round(statistics.mean(tokens), 1), "blas": embedder.blas.name,
            "probe_gflops": round(probe_gflops(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k memories only")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="comma-separated memory counts (default 10000,100000)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--data", choices=("random", "clustered"), default="random")
    parser.add_argument("--no-embed", action="store_true", help="skip the query-embedding timing")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="first wait up to S seconds for the machine to be quiet")
    args = parser.parse_args()
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
    result: dict[str, Any] = {"bench": PROG, "data": args.data, "machine_before": machine_load(),
                              "waited_for_quiet": quiet}
    if not args.no_embed:
        progress("embedding timing")
        result["embed"] = bench_embed()
    sizes = args.sizes or ([10_000] if args.quick else [10_000, 100_000])
    result["recall"] = {}
    for n in sizes:
        progress(f"recall at {n} memories ({args.data} vectors)")
        result["recall"][str(n)] = bench_size(n, args)
    result["machine_after"] = machine_load()
    emit(result)


if __name__ == "__main__":
    main()
