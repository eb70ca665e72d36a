"""The evaluation-side name of `fincocktail.models.forward` (the body-only forward and float32 head).

The code moved down to `models` so that training (the same layer as evaluation, which it may
not import) scores its learning curves with the very functions evaluation uses; this module
keeps every existing import working.
"""

from fincocktail.models.forward import (
    MIN_SHARED_PREFIX,
    Padded,
    Scorer,
    _preallocated_layer,
    answer_logprobs,
    common_prefix_length,
    left_pad,
    prefill_rows,
    run_prompts,
    shared_prefix_cache,
)

__all__ = [
    "MIN_SHARED_PREFIX", "Padded", "Scorer", "_preallocated_layer", "answer_logprobs", "common_prefix_length", "left_pad",
    "prefill_rows", "run_prompts", "shared_prefix_cache",
]
