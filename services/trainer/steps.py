"""How many optimizer steps a night trains: epochs over its dataset, bounded.

A fixed step count teaches a small night many times over and a large one
less than once; what a fact needs is a number of passes over its phrasings.
"""

from __future__ import annotations

import math


def steps_for(examples: int, *, epochs: float, batch_size: int = 1, max_steps: int = 2000,
              min_steps: int = 1) -> int:
    """``epochs`` passes over ``examples`` in batches of ``batch_size``, within [min_steps, max_steps]."""
    if examples < 0 or epochs <= 0 or batch_size < 1:
        raise ValueError("examples >= 0, epochs > 0 and batch_size >= 1 are required")
    wanted = math.ceil(examples * epochs / batch_size)
    return max(min_steps, min(max_steps, wanted))


def items_with_anchors(examples: int, anchor_share: float) -> int:
    """How many items the worker trains on: the dataset plus its anchors (services.trainer.anchors)."""
    return examples + (int(round(examples * anchor_share / (1 - anchor_share))) if anchor_share > 0 else 0)
