"""A faster SAM mask decoder for many prompts on one image, built from a loaded one.

Same function as :class:`realtime_sam.model.modeling.MaskDecoder` (equal within
float rounding: under 1e-6 on the golden logits), rearranged so that one
prompt costs about half of a reference call and ``B`` prompts about ``B``
times less than that again would suggest:

* Cross-attention projections move to the token side where that is cheaper.
  A prompt has ``N`` (about 7) tokens against 4096 image positions, so
  ``q_h k_h^T = (q_h W_k,h)(x + pe)^T`` and ``softmax_h (x W_v,h^T + b) =
  (softmax_h x) W_v,h^T + b`` read the image with ``heads * N`` columns instead
  of projecting all 4096 positions to 128 channels and back; likewise for
  image-to-token attention and its output projection (see
  :class:`_CrossAttention`). About 2 instead of 3.6 GFLOP per prompt.
* Prompts without a mask prompt share the image keys until the first
  image-to-token attention updates them (``Bk = 1``): the embedding is never
  copied per prompt, and the first layer's token-to-image attention reads it
  once for the whole batch (with the image-side projections when those are
  cheaper for that many prompts).
* The image side stays in token-major ``Bk x 4096 x 256`` layout throughout
  (the reference flips between NCHW and token-major and adds the positional
  encoding through a transposed view, slow on the CPU).
* The two transposed convolutions (kernel 2, stride 2) of the output upscaling
  are per-pixel linear maps, done as GEMMs on the token-major tensor; pixels
  stay in sub-pixel order until the final ``B x M x 256 x 256`` logits are
  rearranged, so no large tensor is permuted.
* Only the mask tokens that are returned become masks (one without
  ``multimask_output``, three with it).
* On the CPU, prompts run in chunks of ``chunk_size`` (2 by default): CPU time
  per prompt was 63 ms at batches of 1-2 but 89-92 ms at 8-16 on a 2-core
  AVX2 machine with a 32 MB L3, where a batch's ``B x 4096 x 256``
  intermediates stop fitting in cache. On a GPU the whole batch runs at once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from realtime_sam.model.modeling.mask_decoder import MaskDecoder
from realtime_sam.model.modeling.transformer import Attention
from realtime_sam.model.runtime.kernels import linear_gelu

__all__ = ["FastMaskDecoder"]


class _CrossAttention(nn.Module):
    """One cross-attention's weights, split per head (copies); the softmax scale is folded into ``q``.

    Shapes: ``q_w``, ``k_w``, ``v_w`` are ``h x d x C`` (``D = h*d`` inner width,
    ``C`` model width), biases ``h x d``; ``o_w`` is ``C x h x d``, ``o_b`` ``C``.
    """

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        h = attn.num_heads
        inner = attn.internal_dim
        d = inner // h
        scale = 1.0 / math.sqrt(d)
        self.heads, self.head_dim = h, d

        def split(lin: nn.Linear, mult: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
            w = lin.weight.detach() * mult
            return w.reshape(h, d, -1).contiguous(), (lin.bias.detach() * mult).reshape(h, d).contiguous()

        for name, lin, mult in (("q", attn.q_proj, scale), ("k", attn.k_proj, 1.0), ("v", attn.v_proj, 1.0)):
            w, b = split(lin, mult)
            self.register_buffer(f"{name}_w", w)
            self.register_buffer(f"{name}_b", b)
        self.register_buffer("o_w", attn.out_proj.weight.detach().reshape(-1, h, d).contiguous())
        self.register_buffer("o_b", attn.out_proj.bias.detach().clone())
        # Plain (D x C) forms for the projection path.
        self.register_buffer("k_w2", self.k_w.reshape(inner, -1))
        self.register_buffer("k_b2", self.k_b.reshape(inner))
        self.register_buffer("v_w2", self.v_w.reshape(inner, -1))
        self.register_buffer("v_b2", self.v_b.reshape(inner))

    def _tok(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Project tokens ``BxNxC`` with a per-head weight: ``BxNxhxd``."""
        bsz, n, _ = x.shape
        return F.linear(x, w.reshape(-1, w.shape[-1]), b.reshape(-1)).view(bsz, n, self.heads, self.head_dim)

    def token_to_image(
        self, q_in: torch.Tensor, keys: torch.Tensor, keys_pe: torch.Tensor, project_image: bool
    ) -> torch.Tensor:
        """Tokens ``q_in BxNxC`` attend to the image (``keys`` and ``keys + pe``, ``BkxHWxC``): ``BxNxC``.

        With ``project_image`` the image is projected to ``k``/``v`` (``HW x D``
        each, cheaper when ``Bk = 1`` is shared by many prompts). Otherwise the
        projections move to the token side: ``q_h k_h^T = (q_h W_k,h) (x+pe)^T``
        (the key bias adds the same constant to a whole softmax row and drops
        out) and ``softmax_h v_h = (softmax_h x) W_v,h^T + b_v,h`` (rows sum to
        one), which costs ``h*N`` instead of ``2*D`` columns per image position.
        """
        b, n, c = q_in.shape
        bk, hw, _ = keys.shape
        g = b // bk
        h, d = self.heads, self.head_dim
        q = self._tok(q_in, self.q_w, self.q_b)  # B x N x h x d
        if project_image:
            k = F.linear(keys_pe, self.k_w2, self.k_b2).view(bk, hw, h, d).transpose(1, 2)  # Bk x h x HW x d
            v = F.linear(keys, self.v_w2, self.v_b2).view(bk, hw, h, d).transpose(1, 2)
            qh = q.reshape(bk, g * n, h, d).transpose(1, 2)  # Bk x h x gN x d
            attn = (qh @ k.transpose(-1, -2)).softmax(dim=-1)
            o = (attn @ v).transpose(1, 2).reshape(b, n, h, d)
        else:
            a = torch.einsum("bnhd,hdc->bhnc", q, self.k_w).reshape(bk, g * h * n, c)
            attn = (a @ keys_pe.transpose(1, 2)).softmax(dim=-1)  # Bk x (g h N) x HW
            r = (attn @ keys).view(b, h, n, c)
            o = torch.einsum("bhnc,hdc->bnhd", r, self.v_w) + self.v_b
        return F.linear(o.reshape(b, n, h * d), self.o_w.reshape(c, -1), self.o_b)

    def image_to_token(
        self, k_in: torch.Tensor, v_in: torch.Tensor, keys_pe: torch.Tensor
    ) -> torch.Tensor:
        """Image positions (``keys_pe BkxHWxC``) attend to each prompt's tokens (``k_in``, ``v_in`` ``BxNxC``): ``BxHWxC``.

        Computed on the token side: ``q_h k_h^T = (x+pe) (W_q,h^T k_h^T) + b_q,h k_h^T``
        and ``out = sum_h softmax_h (v_h W_o,h^T) + b_o``, so the image is read
        twice with ``h*N`` columns instead of being projected to ``D`` and back.
        """
        b, n, c = k_in.shape
        bk, hw, _ = keys_pe.shape
        g = b // bk
        h = self.heads
        k = self._tok(k_in, self.k_w, self.k_b)  # B x N x h x d
        v = self._tok(v_in, self.v_w, self.v_b)
        gq = torch.einsum("bnhd,hdc->bhnc", k, self.q_w).reshape(bk, g * h * n, c)
        bias = torch.einsum("bnhd,hd->bhn", k, self.q_b).reshape(bk, g * h * n, 1)
        # Scores as (prompt, head, token, position): the softmax over the N tokens runs along a
        # non-last axis, vectorised over the contiguous positions.
        scores = torch.baddbmm(bias, gq, keys_pe.transpose(1, 2))  # Bk x (g h N) x HW
        probs = scores.view(bk, g, h, n, hw).softmax(dim=3).view(b, h * n, hw)
        m = torch.einsum("bnhd,chd->bhnc", v, self.o_w).reshape(b, h * n, c)
        return torch.baddbmm(self.o_b, probs.transpose(1, 2), m)  # B x HW x C


class FastMaskDecoder(nn.Module):
    """Inference-only mask decoder. See :meth:`forward` for shapes.

    Holds references to the source decoder's small token-side modules and
    regrouped copies of the image-side weights.
    """

    def __init__(self, decoder: MaskDecoder, *, chunk_size: int | None = None, fused: bool = False) -> None:
        """``chunk_size``: prompts per pass (``None``: all at once). ``fused``: use oneDNN fused kernels (CPU)."""
        super().__init__()
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, not {chunk_size}")
        self.chunk_size = chunk_size
        self.fused = fused
        tr = decoder.transformer
        self.num_mask_tokens = decoder.num_mask_tokens
        self.iou_token = decoder.iou_token
        self.mask_tokens = decoder.mask_tokens
        self.layers = tr.layers
        self.t2i = nn.ModuleList(_CrossAttention(blk.cross_attn_token_to_image) for blk in tr.layers)
        self.i2t = nn.ModuleList(_CrossAttention(blk.cross_attn_image_to_token) for blk in tr.layers)
        self.final_attn = _CrossAttention(tr.final_attn_token_to_image)
        self.norm_final_attn = tr.norm_final_attn
        self.hypernetworks = decoder.output_hypernetworks_mlps
        self.iou_head = decoder.iou_prediction_head
        up = decoder.output_upscaling
        deconv1, ln, deconv2 = up[0], up[1], up[3]
        c1, c2 = deconv1.out_channels, deconv2.out_channels
        # ConvTranspose2d(k=2, s=2) weight (in, out, 2, 2): output pixel (2i+a, 2j+b) = x[i, j] @ W[:, :, a, b].
        # As a Linear weight with rows ordered (a, b, out), each output pixel's channels stay contiguous.
        self.register_buffer("up1_w", deconv1.weight.detach().permute(2, 3, 1, 0).reshape(4 * c1, -1).contiguous())
        self.register_buffer("up1_b", deconv1.bias.detach().repeat(4).contiguous())
        self.register_buffer("up2_w", deconv2.weight.detach().permute(2, 3, 1, 0).reshape(4 * c2, -1).contiguous())
        self.register_buffer("up2_b", deconv2.bias.detach().repeat(4).contiguous())
        self.up_ln_w, self.up_ln_b, self.up_ln_eps = ln.weight, ln.bias, float(ln.eps)
        self.c1, self.c2 = c1, c2

    @staticmethod
    def shared_dense(dense: torch.Tensor) -> bool:
        """Whether every prompt has the same dense embedding (batch 1, or an ``expand``-ed view)."""
        return dense.shape[0] == 1 or dense.stride(0) == 0

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            image_embeddings: ``1x256x64x64``, one image shared by all prompts.
            image_pe: ``1x256x64x64`` (``PromptEncoder.get_dense_pe()``).
            sparse_prompt_embeddings: ``BxNx256``.
            dense_prompt_embeddings: ``Bx256x64x64``, or ``1x256x64x64`` / an expanded view when shared.

        Returns:
            ``(masks BxCx256x256 logits, iou BxC)`` with ``C`` 3 if ``multimask_output`` else 1.
        """
        b = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] != 1:
            raise ValueError("FastMaskDecoder decodes prompts on one image: image_embeddings must be 1x256x64x64")
        shared = self.shared_dense(dense_prompt_embeddings)
        step = self.chunk_size
        if step is None or b <= step:
            return self._decode(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output)
        parts = [
            self._decode(
                image_embeddings,
                image_pe,
                sparse_prompt_embeddings[i : i + step],
                dense_prompt_embeddings[:1] if shared else dense_prompt_embeddings[i : i + step],
                multimask_output,
            )
            for i in range(0, b, step)
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _decode(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = sparse_prompt_embeddings.shape[0]
        dense = dense_prompt_embeddings[:1] if self.shared_dense(dense_prompt_embeddings) else dense_prompt_embeddings
        keys = (image_embeddings + dense).flatten(2).transpose(1, 2).contiguous()  # Bk x HW x C, Bk in {1, b}
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()  # 1 x HW x C

        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        n = tokens.shape[1]
        queries = tokens
        for blk, t2i, i2t in zip(self.layers, self.t2i, self.i2t):
            if blk.skip_first_layer_pe:
                queries = blk.self_attn(queries, queries, queries)
            else:
                q = queries + tokens
                queries = queries + blk.self_attn(q, q, queries)
            queries = blk.norm1(queries)
            keys_pe = keys + key_pe
            project = self._project_image(keys.shape[0], b, n, t2i)
            queries = blk.norm2(queries + t2i.token_to_image(queries + tokens, keys, keys_pe, project))
            queries = blk.norm3(queries + blk.mlp(queries))
            out = i2t.image_to_token(queries + tokens, queries, keys_pe)  # b x HW x C
            bk, hw, c = keys.shape
            keys = blk.norm4((keys.unsqueeze(1) + out.view(bk, -1, hw, c)).view(-1, hw, c))
        keys_pe = keys + key_pe
        project = self._project_image(keys.shape[0], b, n, self.final_attn)
        queries = self.norm_final_attn(
            queries + self.final_attn.token_to_image(queries + tokens, keys, keys_pe, project)
        )

        if keys.shape[0] != b:  # only with zero layers; keeps the shapes below uniform
            keys = keys.expand(b, -1, -1)
        sel = range(1, self.num_mask_tokens) if multimask_output else range(1)
        hyper = torch.stack([self.hypernetworks[i](queries[:, 1 + i, :]) for i in sel], dim=1)  # b x M x c2
        masks = self._masks(keys, hyper)
        iou = self.iou_head(queries[:, 0, :])
        iou = iou[:, 1:] if multimask_output else iou[:, :1]
        return masks, iou

    @staticmethod
    def _project_image(bk: int, b: int, n: int, attn: _CrossAttention) -> bool:
        """Project the image side (``2*D`` columns, once per key batch) or the tokens (``h*N`` per prompt)?"""
        return bk * attn.heads * attn.head_dim < b * attn.heads * n

    def _masks(self, src: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Upscale ``src BxHWxC`` (64x64 grid) 4x and take each pixel's dot product with ``hyper BxMxc2``."""
        b, hw, _ = src.shape
        side = math.isqrt(hw)
        y = F.linear(src, self.up1_w, self.up1_b)  # b x HW x (2*2*c1)
        y = F.layer_norm(y.view(-1, self.c1), (self.c1,), self.up_ln_w, self.up_ln_b, self.up_ln_eps)
        y = linear_gelu(F.gelu(y), self.up2_w, self.up2_b, self.fused)  # (b*HW*4) x (2*2*c2)
        y = y.view(b, hw * 16, self.c2)
        m = hyper.shape[1]
        masks = hyper @ y.transpose(1, 2)  # b x M x (HW*16), pixels as (i, j, a1, b1, a2, b2)
        masks = masks.view(b, m, side, side, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return masks.reshape(b, m, side * 4, side * 4)
