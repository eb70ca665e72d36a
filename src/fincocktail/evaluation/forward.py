"""The evaluation-side name of `fincocktail.models.forward` (the body-only forward and float32 head).

The code moved down to `models` so that training (the same layer as evaluation, which it may
not import) scores its learning curves with the very functions evaluation uses; this module
keeps every existing import working.
"""

from fincocktail.models.forward import (
    MEMORY_SHARE,
    MIN_SHARED_PREFIX,
    OUT_OF_MEMORY,
    Padded,
    Scorer,
    _preallocated_layer,
    answer_logprobs,
    common_prefix_length,
    left_pad,
    prefill_rows,
    memory_batch_tokens,
    release_memory,
    run_prompts,
    shared_prefix_cache,
    split_on_oom,
    tokens_that_fit,
    with_room,
)

__all__ = [
    "MEMORY_SHARE", "OUT_OF_MEMORY", "memory_batch_tokens", "release_memory", "split_on_oom", "tokens_that_fit", "with_room",
    "MIN_SHARED_PREFIX", "Padded", "Scorer", "_preallocated_layer", "answer_logprobs", "common_prefix_length", "left_pad",
    "prefill_rows", "run_prompts", "shared_prefix_cache",
]
