"""A faster TinyViT (MobileSAM ``vit_t`` encoder) for inference, built from a loaded one.

Same function as :class:`realtime_sam.model.modeling.TinyViT` (``Bx3x1024x1024 ->
Bx256x64x64``, equal to it within float rounding: about 1e-5 on the golden
data), rearranged for speed:

* every Conv2d+BatchNorm pair is folded into one convolution with a bias;
* on the CPU, a convolution and the GELU (and the residual add) after it run
  as one oneDNN call, so the large stage-0 activations are written once
  instead of three times;
* the convolution stages run in ``channels_last`` memory, where oneDNN's 1x1
  and depthwise kernels are several times faster than in NCHW, and which is
  also the layout the attention stages already use (``BxHxWxC``);
* window attention has its relative-position bias gathered once per layer
  (``heads x N x N``), the softmax scale folded into the query weights, and
  the bias added inside the ``q @ k^T`` product (``baddbmm``).

Measured on a 2-core AVX2 machine, ``torch.nn.functional.scaled_dot_product_attention``
with the bias as ``attn_mask`` was slower than ``baddbmm`` + softmax for these
small windows (49 and 196 tokens), so it is not used.

The module holds copies of the weights (folded), not references: build it
once per model with :func:`build_fast_tiny_vit`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from realtime_sam.model.modeling.tiny_vit import (
    BasicLayer,
    Conv2dBN,
    ConvLayer,
    MBConv,
    PatchMerging,
    TinyViT,
    TinyViTBlock,
    window_attention,
)
from realtime_sam.model.runtime.kernels import fused_cpu_ops_available, linear_gelu

__all__ = ["FastTinyViT", "build_fast_tiny_vit", "fold_conv_bn"]


def fold_conv_bn(m: Conv2dBN) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` of the single convolution equal to ``bn(conv(x))`` in eval mode."""
    conv, bn = m.c, m.bn
    assert bn.running_var is not None and bn.running_mean is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return weight.detach().clone(), bias.detach().clone()


class ConvAct(nn.Module):
    """``act(conv(x) + bias [+ residual])`` with ``act`` GELU or identity. ``BxCxHxW`` in and out.

    With ``fused=True`` (CPU only) the whole expression is one oneDNN call.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        *,
        stride: int,
        padding: int,
        groups: int,
        gelu: bool,
        fused: bool,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("bias", bias.contiguous())
        self.stride = [stride, stride]
        self.padding = [padding, padding]
        self.groups = groups
        self.gelu = gelu
        self.fused = fused

    @classmethod
    def from_conv_bn(cls, m: Conv2dBN, *, gelu: bool, fused: bool) -> ConvAct:
        w, b = fold_conv_bn(m)
        c = m.c
        return cls(w, b, stride=c.stride[0], padding=c.padding[0], groups=c.groups, gelu=gelu, fused=fused)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.fused:
            ops = torch.ops.mkldnn
            if residual is None:
                act, alg = ("gelu", "none") if self.gelu else ("none", None)
                return ops._convolution_pointwise(
                    x, self.weight, self.bias, self.padding, self.stride, [1, 1], self.groups, act, [], alg
                )
            # oneDNN fuses a unary op after a binary one only for ReLU: add here, GELU in place below.
            y = ops._convolution_pointwise.binary(
                x, residual, self.weight, self.bias, self.padding, self.stride, [1, 1], self.groups,
                "add", None, None, [], None,
            )
            return torch.ops.aten.gelu_(y) if self.gelu else y
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        if residual is not None:
            y = y + residual
        return F.gelu(y) if self.gelu else y


class FastMBConv(nn.Module):
    """MBConv with folded BatchNorm; the projection conv adds the residual and applies the GELU itself."""

    def __init__(self, m: MBConv, fused: bool) -> None:
        super().__init__()
        self.conv1 = ConvAct.from_conv_bn(m.conv1, gelu=True, fused=fused)
        self.conv2 = ConvAct.from_conv_bn(m.conv2, gelu=True, fused=fused)
        self.conv3 = ConvAct.from_conv_bn(m.conv3, gelu=True, fused=fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)), residual=x)


class FastPatchMerging(nn.Module):
    def __init__(self, m: PatchMerging, fused: bool) -> None:
        super().__init__()
        self.conv1 = ConvAct.from_conv_bn(m.conv1, gelu=True, fused=fused)
        self.conv2 = ConvAct.from_conv_bn(m.conv2, gelu=True, fused=fused)
        self.conv3 = ConvAct.from_conv_bn(m.conv3, gelu=False, fused=fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class FastWindowAttention(nn.Module):
    """TinyViT window attention with the bias table gathered once and the scale folded into ``q``.

    Input/output ``Bx(w*w)xC`` (``B`` = images x windows).
    """

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.num_heads = int(m.num_heads)
        self.head_dim = int(m.head_dim)
        self.norm = m.norm
        dim = self.num_heads * self.head_dim
        # qkv rows are grouped per head as [q | k | v]; scale the q rows.
        w = m.qkv.weight.detach().clone().view(self.num_heads, 3, self.head_dim, dim)
        b = m.qkv.bias.detach().clone().view(self.num_heads, 3, self.head_dim)
        w[:, 0] *= m.scale
        b[:, 0] *= m.scale
        self.qkv = nn.Linear(dim, 3 * dim)
        self.qkv.weight.data.copy_(w.reshape(3 * dim, dim))
        self.qkv.bias.data.copy_(b.reshape(3 * dim))
        self.proj = m.proj
        self.register_buffer("bias", m.attention_biases.detach()[:, m.bias_index].clone().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h, d = self.num_heads, self.head_dim
        qkv = self.qkv(self.norm(x)).view(b, n, h, 3, d).permute(3, 0, 2, 1, 4)
        q = qkv[0].reshape(b * h, n, d)
        k = qkv[1].reshape(b * h, n, d)
        v = qkv[2].reshape(b * h, n, d)
        bias = self.bias.to(x.dtype).expand(b, h, n, n).reshape(b * h, n, n)
        attn = torch.baddbmm(bias, q, k.transpose(1, 2)).softmax(dim=-1)
        out = torch.bmm(attn, v).view(b, h, n, d).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class FastTinyMlp(nn.Module):
    """``fc2(gelu(fc1(norm(x))))`` with ``fc1`` and the GELU as one oneDNN call when ``fused``. ``...xC``."""

    def __init__(self, m: nn.Module, fused: bool) -> None:
        super().__init__()
        self.norm = m.norm
        self.fc1 = m.fc1
        self.fc2 = m.fc2
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(linear_gelu(self.norm(x), self.fc1.weight, self.fc1.bias, self.fused))


class FastTinyViTBlock(nn.Module):
    """``BxHxWxC`` in and out; the local conv sees that tensor as channels_last NCHW (no copy)."""

    def __init__(self, m: TinyViTBlock, fused: bool) -> None:
        super().__init__()
        self.window = m.window
        self.attn = FastWindowAttention(m.attn)
        self.mlp = FastTinyMlp(m.mlp, fused)
        self.local_conv = ConvAct.from_conv_bn(m.local_conv, gelu=False, fused=fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + window_attention(x, self.window, self.attn)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class _NeckLayerNorm(nn.Module):
    """SAM's LayerNorm2d on a channels_last tensor, as ``F.layer_norm`` over the contiguous last axis."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.weight = m.weight
        self.bias = m.bias
        self.eps = float(m.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class FastTinyViT(nn.Module):
    """Inference-only TinyViT: ``Bx3x1024x1024`` (normalised, padded, any layout) -> contiguous ``Bx256x64x64``."""

    def __init__(self, m: TinyViT, *, fused: bool) -> None:
        super().__init__()
        self.img_size = m.img_size
        self.fused = fused
        seq = m.patch_embed.seq
        self.stem1 = ConvAct.from_conv_bn(seq[0], gelu=True, fused=fused)
        self.stem2 = ConvAct.from_conv_bn(seq[2], gelu=False, fused=fused)
        stages: list[nn.Module] = []
        for layer in m.layers:
            if isinstance(layer, ConvLayer):
                blocks = [FastMBConv(b, fused) for b in layer.blocks]
            else:
                assert isinstance(layer, BasicLayer)
                blocks = [_ToNHWC(), *(FastTinyViTBlock(b, fused) for b in layer.blocks), _ToNCHW()]
            if layer.downsample is not None:
                blocks.append(FastPatchMerging(layer.downsample, fused))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        neck = m.neck
        self.neck = nn.Sequential(neck[0], _NeckLayerNorm(neck[1]), neck[2], _NeckLayerNorm(neck[3]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem2(self.stem1(x))
        for stage in self.stages:
            x = stage(x)
        return self.neck(x).contiguous()


class _ToNHWC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class _ToNCHW(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


def build_fast_tiny_vit(encoder: TinyViT, *, device: torch.device, dtype: torch.dtype) -> FastTinyViT:
    """A :class:`FastTinyViT` on ``device`` in ``dtype`` (weights folded in fp32 first, then cast)."""
    fused = device.type == "cpu" and fused_cpu_ops_available(dtype)
    # A private fp32 copy: the fast module shares some submodules with its source and is cast below.
    source = copy.deepcopy(encoder).float().eval()
    fast = FastTinyViT(source, fused=fused).eval()
    fast = fast.to(device=device, dtype=dtype)
    # Weights in channels_last let oneDNN skip a reorder of the 4-D kernels on every call.
    if device.type == "cpu":
        fast = fast.to(memory_format=torch.channels_last)
    return fast
