"""Cost meter: prefill FLOPs from the real sequence lengths (seats-reference section 13.1).

Convention: a multiply-add is one FLOP; an (M x K)(K x N) product costs M*K*N.  Norms, RoPE,
softmax, activations, the routers' softmax and selection overheads are ignored; encoders and
decoding are not counted.  Per decoder layer with S tokens entering it:

    q, o:        2 * S * D * (H * d)
    k, v:        2 * S * D * (Hkv * d)
    QK^T, AV:    2 * S^2 * (H * d)            (full S^2, not the causal half, as upstream)
    dense MLP:   3 * S * D * I                (SwiGLU: gate, up, down)
    MoE MLP:     3 * S * D * I_e * top_k  +  S * D * E (router)  [+ 3 * S * D * I_shared]

plus the LM head S_final * D * V over every position left after the last layer.  For Qwen2.5-Omni
(H*d = D) this is exactly upstream's formula; for Qwen3-Omni-MoE only the active experts count.

``prefill_flops_causal`` is the same count with the attention products on the causal half,
S(S+1)/2 query-key pairs instead of S^2, which is what causal attention kernels (sdpa with
``is_causal``, flash-attention) compute.  The meter's figure stays the headline (the paper's
convention); the causal one is quoted beside measured time ratios (``seats-exp mode=bench``),
where the full-S^2 ratio overstates the attainable speed-up.
"""

from __future__ import annotations

from seats_exp.models.adapters import ModelDims


def layer_flops(dims: ModelDims, seq: int, layer_index: int = 0, causal: bool = False) -> float:
    d, qd, kvd = dims.hidden, dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
    s = float(seq)
    pairs = s * (s + 1) / 2 if causal else s * s  # query-key pairs of QK^T and AV
    attn = 2 * s * d * qd + 2 * s * d * kvd + 2 * pairs * qd
    if dims.experts_per_token and layer_index in dims.moe_layers:
        mlp = 3 * s * d * dims.intermediate * dims.experts_per_token + s * d * dims.num_experts
        mlp += 3 * s * d * dims.shared_expert_intermediate
    else:
        width = dims.dense_intermediate if dims.experts_per_token else dims.intermediate
        mlp = 3 * s * d * width
    return attn + mlp


def prefill_flops(dims: ModelDims, layer_lengths: list[int], final_length: int | None = None) -> float:
    """FLOPs of one prefill given the length entering every decoder layer."""
    if len(layer_lengths) != dims.num_layers:
        raise ValueError(f"expected {dims.num_layers} layer lengths, got {len(layer_lengths)}")
    final = layer_lengths[-1] if final_length is None else final_length
    return sum(layer_flops(dims, s, i) for i, s in enumerate(layer_lengths)) + float(final) * dims.hidden * dims.vocab


def prefill_flops_causal(dims: ModelDims, layer_lengths: list[int], final_length: int | None = None) -> float:
    """``prefill_flops`` with causal-half attention: S(S+1)/2 query-key pairs per layer (LM head unchanged)."""
    if len(layer_lengths) != dims.num_layers:
        raise ValueError(f"expected {dims.num_layers} layer lengths, got {len(layer_lengths)}")
    final = layer_lengths[-1] if final_length is None else final_length
    return (sum(layer_flops(dims, s, i, causal=True) for i, s in enumerate(layer_lengths))
            + float(final) * dims.hidden * dims.vocab)


def lengths_from_events(num_layers: int, start: int, events: list[tuple[int, int]]) -> list[int]:
    """Lengths entering each layer when the sequence becomes ``n`` after 1-based layer ``d``."""
    lengths, current, ev = [], start, sorted(events)
    k = 0
    for layer in range(1, num_layers + 1):
        while k < len(ev) and ev[k][0] < layer:
            current = ev[k][1]
            k += 1
        lengths.append(current)
    return lengths
