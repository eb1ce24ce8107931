"""Model adapters: everything that differs between Qwen2.5-Omni and Qwen3-Omni-MoE Thinkers.

Methods never see these differences; the engine asks the adapter for module paths, token ids,
token rates and the family's rotary function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModelDims:
    """Decoder dimensions for the cost meter (seats-reference section 13.1)."""

    num_layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int  # dense SwiGLU width, or the per-expert width for MoE
    vocab: int
    experts_per_token: int = 0  # 0 = dense MLP
    num_experts: int = 0
    moe_layers: tuple[int, ...] = ()  # 0-based layers whose MLP is MoE (others dense)
    dense_intermediate: int = 0  # width of the dense MLP on non-MoE layers
    shared_expert_intermediate: int = 0


class OmniAdapter:
    family: str = ""
    audio_tokens_per_second: float = 25.0

    def __init__(self, thinker: nn.Module):
        self.thinker = thinker
        self.config = thinker.config

    # -- module paths -------------------------------------------------------------------------
    @property
    def language_model(self) -> nn.Module:
        return self.thinker.model.language_model

    @property
    def layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def vision_encoder(self) -> nn.Module:
        return self.thinker.model.visual

    @property
    def audio_encoder(self) -> nn.Module:
        return self.thinker.model.audio_tower

    # -- token ids ----------------------------------------------------------------------------
    @property
    def video_token_id(self) -> int:
        return int(getattr(self.config, "video_token_id", None) or self.config.video_token_index)

    @property
    def audio_token_id(self) -> int:
        return int(getattr(self.config, "audio_token_id", None) or self.config.audio_token_index)

    @property
    def num_layers(self) -> int:
        return int(self.config.text_config.num_hidden_layers)

    @property
    def spatial_merge_size(self) -> int:
        return int(self.config.vision_config.spatial_merge_size)

    def dims(self) -> ModelDims:
        raise NotImplementedError

    # -- scoring --------------------------------------------------------------------------------
    def _rotary(self):
        raise NotImplementedError

    def _project_q(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """q [1, H, S, d] of ``layer`` for normalised input ``x`` [1, S, D] (``_project_k``: [1, Hkv, S, d])."""
        attn = layer.self_attn
        return attn.q_proj(x).view(x.shape[0], x.shape[1], -1, attn.head_dim).transpose(1, 2)

    def _project_k(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        attn = layer.self_attn
        return attn.k_proj(x).view(x.shape[0], x.shape[1], -1, attn.head_dim).transpose(1, 2)

    @torch.no_grad()
    def last_text_attention(
        self,
        layer_index: int,
        hidden: torch.Tensor,  # [S, D] current hidden states
        cos_sin: tuple[torch.Tensor, torch.Tensor],  # each [1, S, d] (already sliced to the current sequence)
        query_position: int | torch.Tensor,  # an int, or a 0-dim/[1] long tensor (no host read needed)
        score_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Head-mean softmax attention of the token at ``query_position`` over every position.

        Uses decoder module ``layer_index``'s input norm and q/k projections (seats-reference 9.1):
        softmax in fp32 internally, output in the model dtype unless ``score_dtype`` says otherwise.
        Only the query row is projected (one row of q_proj instead of S), and grouped-query heads
        are scored against their shared key head without repeating the keys.
        """
        layer = self.layers[layer_index]
        x = layer.input_layernorm(hidden.unsqueeze(0))  # [1, S, D]; RMSNorm is per row
        if not isinstance(query_position, torch.Tensor):
            query_position = torch.tensor(query_position, device=hidden.device)
        row = query_position.reshape(1).to(device=hidden.device, dtype=torch.long)
        q = self._project_q(layer, x.index_select(1, row))  # [1, H, 1, d]
        k = self._project_k(layer, x)  # [1, Hkv, S, d]
        cos, sin = cos_sin
        rotary = self._rotary()
        q, _ = rotary(q, q, cos.index_select(1, row), sin.index_select(1, row))
        _, k = rotary(k[:, :1, :1], k, cos, sin)  # rotate k only (the first output is a [1, 1, S, d] by-product)
        heads, kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[-1]
        dtype = score_dtype or hidden.dtype
        q_grouped = q.to(dtype).reshape(kv_heads, heads // kv_heads, head_dim)  # q head h uses key head h // G
        logits = (q_grouped @ k[0].to(dtype).transpose(-1, -2)) / math.sqrt(head_dim)  # [Hkv, G, S]
        probs = torch.softmax(logits.reshape(heads, -1).float(), dim=-1).to(dtype)  # [H, S]
        return probs.mean(dim=0)  # [S]


class Qwen25OmniAdapter(OmniAdapter):
    family = "qwen2_5_omni"
    audio_tokens_per_second = 25.0

    def _rotary(self):
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import apply_rotary_pos_emb

        return apply_rotary_pos_emb

    def dims(self) -> ModelDims:
        t = self.config.text_config
        head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
        return ModelDims(
            num_layers=t.num_hidden_layers, hidden=t.hidden_size, heads=t.num_attention_heads,
            kv_heads=t.num_key_value_heads, head_dim=head_dim, intermediate=t.intermediate_size,
            vocab=t.vocab_size,
        )


class Qwen3OmniAdapter(OmniAdapter):
    family = "qwen3_omni"
    audio_tokens_per_second = 13.0

    def _rotary(self):
        from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import apply_rotary_pos_emb

        return apply_rotary_pos_emb

    def _project_q(self, layer, x):
        attn = layer.self_attn
        return attn.q_norm(attn.q_proj(x).view(x.shape[0], x.shape[1], -1, attn.head_dim)).transpose(1, 2)

    def _project_k(self, layer, x):
        attn = layer.self_attn
        return attn.k_norm(attn.k_proj(x).view(x.shape[0], x.shape[1], -1, attn.head_dim)).transpose(1, 2)

    def dims(self) -> ModelDims:
        t = self.config.text_config
        sparse_step = getattr(t, "decoder_sparse_step", 1) or 1
        mlp_only = set(getattr(t, "mlp_only_layers", []) or [])
        moe_layers = tuple(
            i for i in range(t.num_hidden_layers)
            if i not in mlp_only and t.num_experts > 0 and (i + 1) % sparse_step == 0
        )
        return ModelDims(
            num_layers=t.num_hidden_layers, hidden=t.hidden_size, heads=t.num_attention_heads,
            kv_heads=t.num_key_value_heads, head_dim=t.head_dim, intermediate=t.moe_intermediate_size,
            vocab=t.vocab_size, experts_per_token=t.num_experts_per_tok, num_experts=t.num_experts,
            moe_layers=moe_layers, dense_intermediate=t.intermediate_size,
            shared_expert_intermediate=getattr(t, "shared_expert_intermediate_size", 0) or 0,
        )


def adapter_for(thinker: nn.Module) -> OmniAdapter:
    name = type(thinker).__name__
    if name.startswith("Qwen3OmniMoe"):
        return Qwen3OmniAdapter(thinker)
    if name.startswith("Qwen2_5Omni"):
        return Qwen25OmniAdapter(thinker)
    raise ValueError(f"no model adapter for {name}; supported: Qwen2.5-Omni and Qwen3-Omni-MoE Thinkers")
