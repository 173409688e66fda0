"""oneDNN fused CPU kernels (convolution/linear + GELU), with a check that they work here.

PyTorch exposes them as ``torch.ops.mkldnn._convolution_pointwise`` and
``torch.ops.mkldnn._linear_pointwise``: the ops ``torch.compile`` itself emits
for CPU graphs. They are not public API, so :func:`fused_cpu_ops_available`
tries them once on tiny inputs and any failure means "use the plain ops".
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

__all__ = ["fused_cpu_ops_available", "linear_gelu"]

_log = logging.getLogger(__name__)


@functools.cache
def fused_cpu_ops_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether the fused conv/linear+GELU and conv+add ops run and agree with the plain ops for ``dtype``."""
    ops = getattr(torch.ops, "mkldnn", None)
    if not torch.backends.mkldnn.is_available() or ops is None or not hasattr(ops, "_convolution_pointwise"):
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4, 5, 5, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(4, 1, 3, 3, generator=gen).to(dtype)
        b = torch.randn(4, generator=gen).to(dtype)
        r = torch.randn(1, 4, 5, 5, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
        y1 = ops._convolution_pointwise(x, w, b, [1, 1], [1, 1], [1, 1], 4, "gelu", [], "none")
        y2 = ops._convolution_pointwise.binary(x, r, w, b, [1, 1], [1, 1], [1, 1], 4, "add", None, None, [], None)
        ref = F.conv2d(x.float(), w.float(), b.float(), 1, 1, 1, 4)
        xl, wl, bl = (torch.randn(s, generator=gen).to(dtype) for s in ((3, 4), (5, 4), (5,)))
        y3 = ops._linear_pointwise(xl, wl, bl, "gelu", [], "none")
        ref3 = F.gelu(F.linear(xl.float(), wl.float(), bl.float()))
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        return bool(
            torch.allclose(y1.float(), F.gelu(ref), atol=tol, rtol=tol)
            and torch.allclose(y2.float(), ref + r.float(), atol=tol, rtol=tol)
            and torch.allclose(y3.float(), ref3, atol=tol, rtol=tol)
        )
    except Exception as exc:  # noqa: BLE001 - private ops: any failure means "not usable"
        _log.debug("oneDNN fused kernels unavailable for %s: %s", dtype, exc)
        return False


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, fused: bool) -> torch.Tensor:
    """``gelu(x @ weight.T + bias)`` (exact erf GELU) for ``...xIn``; one oneDNN call when ``fused``."""
    if not fused:
        return F.gelu(F.linear(x, weight, bias))
    shape = x.shape
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), weight, bias, "gelu", [], "none")
    return y.view(*shape[:-1], weight.shape[0])
