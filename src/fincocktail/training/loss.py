"""The loss on answer tokens only, without a batch x length x vocab logits tensor.

The model's body gives hidden states; the LM head runs only on the positions whose next token
is an answer token. The loop divides the summed loss by the answer tokens of the whole
optimizer step (all its micro-batches), so gradient accumulation and micro-batching give the
same update as one big batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fincocktail.errors import ModelError
from fincocktail.models import text_config
from fincocktail.training.data import IGNORE_INDEX
from fincocktail.training.prefix import can_pack, packed_hidden, suffix_hidden


def _base_model(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _body_and_head(model: Any) -> tuple[Any, Any]:
    base = _base_model(model)
    body = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    head = base.get_output_embeddings()
    if body is None or head is None:
        raise ModelError(f"{type(base).__name__}: cannot find the decoder body and LM head")
    return body, head


def base_config(model: Any) -> Any:
    """The text model's HF config, under peft's wrapper and a multimodal model's outer config."""
    return text_config(_base_model(model).config)


def fp32_head_weight(model: Any) -> torch.Tensor | None:
    """A float32 copy of a frozen low-precision LM head, so logits and loss are computed in fp32.

    None when the head is already fp32 or trains (full fine-tuning), where the head runs as is.
    The copy is made once per run: casting 49k x 576 weights every step would cost more than
    the head itself on answer positions.
    """
    _, head = _body_and_head(model)
    weight = head.weight
    if weight.dtype == torch.float32 or weight.requires_grad:
        return None
    return weight.detach().float()


def answer_loss_sum(
    model: Any,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    head_weight: torch.Tensor | None = None,
    shared_prefix: int = 0,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over answer tokens and their count; logits only where a label exists.

    A sum, not a mean: only the loop knows how many answer tokens the whole step has.
    `head_weight` (from `fp32_head_weight`) replaces the LM head's own weight, in float32.
    `shared_prefix` > 0: the first that many tokens, the same in every row and all prompt
    (`training.prefix.prefix_to_share`), run once: with the rows' real `lengths`, packed into
    one sequence (`prefix.packed_hidden`); without, or where the model's attention cannot take
    that mask, the rows continue from the prefix's cache (`prefix.suffix_hidden`).
    """
    body, head = _body_and_head(model)
    if shared_prefix > 0:
        if attention_mask is not None:
            raise ValueError("shared-prefix training runs right-padded batches without a mask")
        if lengths is not None and can_pack(body, lengths):
            hidden = packed_hidden(body, input_ids, shared_prefix, lengths)
        else:
            hidden = suffix_hidden(body, input_ids, shared_prefix)
        labels = labels[:, shared_prefix:]  # the suffixes' labels, aligned with `hidden`
    else:
        hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    picked = hidden[:, :-1][keep]
    if head_weight is not None:
        bias = getattr(head, "bias", None)
        with torch.autocast(device_type=picked.device.type, enabled=False):  # the head stays fp32 under autocast
            logits = F.linear(picked.float(), head_weight, bias.float() if bias is not None else None)
    else:
        logits = head(picked).float()
    softcap = getattr(base_config(model), "final_logit_softcapping", None)
    if softcap:  # Gemma-2 style: the model's own forward applies this to its logits
        logits = torch.tanh(logits / softcap) * softcap
    loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    return loss, int(keep.sum())


__all__ = ["answer_loss_sum", "base_config", "fp32_head_weight"]
