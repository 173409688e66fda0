"""One entry point for inference: :class:`InferenceModel` and :func:`load_inference_model`.

Backends (``ModelConfig.backend``):

* ``eager``: the plain :class:`~realtime_sam.model.modeling.Sam` (the parity reference).
* ``torch``: rearranged PyTorch modules with the same weights: for ``vit_t``
  a :class:`~.fast_encoder.FastTinyViT`; the other encoders stay as they are.
  The decoder is always :class:`~.fast_decoder.FastMaskDecoder`. Works on
  every device.
* ``onnxruntime`` / ``openvino``: the image encoder exported to ONNX (cached
  beside the weights) and run by that runtime on the CPU; the decoder as in
  ``torch``. ``vit_t`` and fp32 only; needs the optional package.
* ``auto``: ``torch``. On a 2-core AVX2 machine the three CPU encoders cost
  the same CPU time within noise (one thread: torch 2.00 s, ONNX Runtime
  2.05 s, OpenVINO 1.97 s, against 2.68 s for eager with the same allocator
  settings), and with two threads on a busy machine ``torch`` held up best; the
  exported ones add a package and a first-run export, so they stay opt-in.

The prompt encoder always runs in fp32: in half precision, pixel coordinates
near 1024 would lose several pixels of resolution.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from realtime_sam.errors import ConfigError, PromptError
from realtime_sam.model.build import build_sam
from realtime_sam.model.config import BACKENDS, ModelConfig
from realtime_sam.model.device import (
    configure_cpu_threads,
    precision_name,
    resolve_device,
    resolve_precision,
    tune_cpu_allocator,
)
from realtime_sam.model.modeling import Sam, TinyViT
from realtime_sam.model.runtime.cuda_graphs import GraphCache
from realtime_sam.model.runtime.fast_decoder import FastMaskDecoder
from realtime_sam.model.runtime.fast_encoder import build_fast_tiny_vit
from realtime_sam.model.runtime.kernels import fused_cpu_ops_available
from realtime_sam.model.transforms import ResizeLongestSide, check_image

__all__ = [
    "EXPORTED_BACKENDS",
    "Embedding",
    "InferenceModel",
    "InferenceOptions",
    "load_inference_model",
    "resolve_backend",
]

EXPORTED_BACKENDS = ("onnxruntime", "openvino")
"""Backends that run an ONNX export of the encoder (each needs its own package)."""
_CPU_DECODER_CHUNK = 2  # see fast_decoder's module docstring for the measurement


@dataclass(frozen=True)
class InferenceOptions:
    """Tuning of the runtime; where and in which precision it runs is the :class:`ModelConfig`'s.

    Attributes:
        num_threads: CPU threads for PyTorch and the exported encoders; ``None`` keeps PyTorch's choice.
        decoder_chunk: prompts per decoder pass; ``None`` = 2 on the CPU, all at once on a GPU.
        cache_dir: where exported encoders are kept; ``None`` = beside the weights file.
        tune_allocator: on the CPU, apply :func:`~realtime_sam.model.device.tune_cpu_allocator`
            (process-wide; the encoder's large activations stop page-faulting on every call).
    """

    num_threads: int | None = None
    decoder_chunk: int | None = None
    cache_dir: str | None = None
    tune_allocator: bool = True

    def __post_init__(self) -> None:
        if self.num_threads is not None and (isinstance(self.num_threads, bool) or self.num_threads < 1):
            raise ConfigError(f"num_threads must be a positive integer or None, not {self.num_threads!r}")
        if self.decoder_chunk is not None and (isinstance(self.decoder_chunk, bool) or self.decoder_chunk < 1):
            raise ConfigError(f"decoder_chunk must be a positive integer or None, not {self.decoder_chunk!r}")


@dataclass(frozen=True)
class Embedding:
    """One image's encoding.

    Attributes:
        features: ``1x256x64x64`` float32 on the model's device.
        input_size: ``(h, w)`` of the image after the longest-side resize to 1024.
        original_size: ``(H, W)`` of the image given to :meth:`InferenceModel.encode`.
    """

    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]


def resolve_backend(backend: str, device: torch.device, model_type: str, dtype: torch.dtype) -> str:
    """The concrete backend for ``backend`` (``auto`` resolved; unsupported combinations refused).

    Raises:
        ConfigError: an exported backend on a GPU, with another model than ``vit_t``, or not in fp32.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "auto":
        return "torch"
    if backend in EXPORTED_BACKENDS:
        if device.type != "cpu":
            raise ConfigError(f"backend {backend!r} runs on the CPU only; use backend 'torch' on {device.type}")
        if model_type != "vit_t":
            raise ConfigError(f"backend {backend!r} supports model vit_t only; use backend 'torch' for {model_type}")
        if dtype != torch.float32:
            raise ConfigError(f"backend {backend!r} runs in fp32 only; use precision 'fp32' or backend 'torch'")
    return backend


class InferenceModel:
    """Encodes images and decodes prompts with the chosen backend.

    Images are ``HxWx3 uint8``; prompts and output sizes are in original-image
    pixels (points XY, boxes XYXY). Every tensor returned is float32.
    """

    def __init__(
        self,
        sam: Sam,
        *,
        encoder: nn.Module,
        decoder: nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        backend: str,
        model_type: str,
        graphs: GraphCache | None = None,
    ) -> None:
        """Use :func:`load_inference_model`; this wires already-built parts together.

        ``sam`` is the reference model that supplies the prompt encoder and the
        pre/post-processing; ``encoder`` and ``decoder`` are what run;
        ``graphs``, on CUDA, replays both as CUDA graphs (see :mod:`.cuda_graphs`).
        """
        self.graphs = graphs
        self.sam_reference = sam
        self.encoder = encoder
        self.decoder = decoder
        self.device = device
        self.dtype = dtype
        self.backend = backend
        self.model_type = model_type
        self.img_size = sam.img_size
        self.transform = ResizeLongestSide(self.img_size)
        with torch.inference_mode():
            self._dense_pe = sam.prompt_encoder.get_dense_pe().to(dtype)
        self._sam_view: Sam | None = None

    def __repr__(self) -> str:
        return (
            f"InferenceModel(model_type={self.model_type!r}, backend={self.backend!r}, "
            f"device={str(self.device)!r}, precision={precision_name(self.dtype)!r})"
        )

    # -- encoding ------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, image: np.ndarray, image_format: str = "RGB") -> Embedding:
        """Embed ``image`` (``HxWx3 uint8`` in ``image_format`` order, "RGB" or "BGR")."""
        check_image(image, image_format, "encode")
        if image_format == "BGR":
            image = image[..., ::-1]
        h, w = image.shape[:2]
        target = self.transform.get_preprocess_shape(h, w, self.img_size)
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.device)
        return self.encode_resized(self.transform.apply_image_torch_uint8(t, target), (h, w))

    @torch.inference_mode()
    def encode_resized(self, resized: torch.Tensor, original_size: tuple[int, int]) -> Embedding:
        """Embed an already resized ``1x3xhxw`` RGB image (0-255, longest side 1024, any dtype)."""
        if resized.ndim != 4 or resized.shape[:2] != (1, 3) or max(resized.shape[2:]) != self.img_size:
            raise ValueError(
                f"encode_resized expects 1x3xhxw with the longest side {self.img_size}, got {tuple(resized.shape)}"
            )
        x = self.sam_reference.preprocess(resized.to(self.device, torch.float32))
        features = self._encode_tensor(x.to(self.dtype))
        return Embedding(
            features=features,
            input_size=(int(resized.shape[2]), int(resized.shape[3])),
            original_size=(int(original_size[0]), int(original_size[1])),
        )

    @torch.inference_mode()
    def encode_batch(self, images: Sequence[np.ndarray], image_format: str = "RGB") -> list[Embedding]:
        """Embed several images (each ``HxWx3 uint8`` in ``image_format`` order; sizes may differ) in one encoder call.

        Each image is resized and padded to the ``img_size`` square as in
        :meth:`encode`, the ``Bx3xSxS`` batch goes through the encoder once,
        and embedding ``i`` is that of ``images[i]`` (the same as
        ``encode(images[i])`` up to float rounding). The exported encoders
        take one image at a time: they, and a single image, are encoded in turn.
        """
        if len(images) <= 1 or self.backend in EXPORTED_BACKENDS:
            return [self.encode(im, image_format) for im in images]
        xs, inputs, originals = [], [], []
        for image in images:
            check_image(image, image_format, "encode_batch")
            if image_format == "BGR":
                image = image[..., ::-1]
            h, w = image.shape[:2]
            target = self.transform.get_preprocess_shape(h, w, self.img_size)
            t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.device)
            resized = self.transform.apply_image_torch_uint8(t, target)
            xs.append(self.sam_reference.preprocess(resized.to(self.device, torch.float32)))  # padded to SxS
            inputs.append((int(resized.shape[2]), int(resized.shape[3])))
            originals.append((int(h), int(w)))
        features = self._encode_tensor(torch.cat(xs).to(self.dtype))
        return [
            Embedding(features=features[i : i + 1], input_size=inputs[i], original_size=originals[i])
            for i in range(len(images))
        ]

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder on a preprocessed ``Bx3xSxS`` batch in the model's dtype -> ``Bx256x64x64`` float32."""
        if self.graphs is not None:
            (features,) = self.graphs.run(("encode", tuple(x.shape), x.dtype), lambda t: (self.encoder(t),), (x,))
        else:
            features = self.encoder(x)
        return features.to(self.device, torch.float32)

    # -- decoding ------------------------------------------------------------------------

    @torch.inference_mode()
    def decode(
        self,
        embedding: Embedding,
        point_coords: np.ndarray | torch.Tensor | None = None,
        point_labels: np.ndarray | torch.Tensor | None = None,
        boxes: np.ndarray | torch.Tensor | None = None,
        mask_input: np.ndarray | torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``B`` prompts on one image in one call.

        Args:
            embedding: from :meth:`encode`.
            point_coords: ``BxNx2`` XY in original-image pixels (with ``point_labels``).
            point_labels: ``BxN``: 1 foreground, 0 background, -1 padding.
            boxes: ``Bx4`` XYXY in original-image pixels.
            mask_input: ``Bx1x256x256`` low-res logits from an earlier decode.
            multimask_output: three candidate masks per prompt instead of one.

        Returns:
            ``(low_res_logits BxCx256x256, iou BxC)``, float32, ``C`` 3 or 1.

        Raises:
            PromptError: no prompt, mismatched batch sizes or shapes, non-finite coordinates.
        """
        points = None
        sizes = []
        if point_coords is not None:
            if point_labels is None:
                raise PromptError("point_labels must be given with point_coords (1 = foreground, 0 = background)")
            coords = self._coords(point_coords, "point_coords")
            if coords.ndim != 3 or coords.shape[-1] != 2:
                raise PromptError(f"point_coords must be BxNx2, got shape {tuple(coords.shape)}")
            labels = torch.as_tensor(np.asarray(point_labels) if not torch.is_tensor(point_labels) else point_labels)
            labels = labels.to(self.device, torch.int64)
            if tuple(labels.shape) != tuple(coords.shape[:2]):
                raise PromptError(f"point_labels must be BxN = {tuple(coords.shape[:2])}, got {tuple(labels.shape)}")
            points = (self._to_input_frame(coords, embedding), labels)
            sizes.append(coords.shape[0])
        box_t = None
        if boxes is not None:
            b = self._coords(boxes, "boxes")
            if b.ndim != 2 or b.shape[-1] != 4:
                raise PromptError(f"boxes must be Bx4 XYXY, got shape {tuple(b.shape)}")
            box_t = self._to_input_frame(b.reshape(-1, 2, 2), embedding).reshape(-1, 4)
            sizes.append(b.shape[0])
        mask_t = None
        if mask_input is not None:
            mask_t = torch.as_tensor(mask_input if torch.is_tensor(mask_input) else np.asarray(mask_input))
            mask_t = mask_t.to(self.device, torch.float32)
            if mask_t.ndim != 4 or mask_t.shape[1:] != (1, 256, 256):
                raise PromptError(f"mask_input must be Bx1x256x256 low-res logits, got shape {tuple(mask_t.shape)}")
            sizes.append(mask_t.shape[0])
        if not sizes:
            raise PromptError("decode needs at least one of point_coords, boxes or mask_input")
        if len(set(sizes)) != 1:
            raise PromptError(f"points, boxes and mask_input must have the same batch size, got {sizes}")
        if sizes[0] == 0:
            c = 3 if multimask_output else 1
            return torch.zeros(0, c, 256, 256, device=self.device), torch.zeros(0, c, device=self.device)
        return self.decode_embedded(embedding, points, box_t, mask_t, multimask_output)

    @torch.inference_mode()
    def decode_embedded(
        self,
        embedding: Embedding,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode` for tensors already in the *resized* input frame (``SamPredictor.predict_torch``'s convention)."""
        coords, labels = points if points is not None else (None, None)
        if self.graphs is None:
            return self._decode_tensors(multimask_output, embedding.features, coords, labels, boxes, mask_input)
        inputs = (embedding.features, coords, labels, boxes, mask_input)
        key = ("decode", multimask_output, *(None if t is None else (tuple(t.shape), t.dtype) for t in inputs))
        low, iou = self.graphs.run(key, lambda *t: self._decode_tensors(multimask_output, *t), inputs)
        return low, iou

    def _decode_tensors(
        self,
        multimask_output: bool,
        features: torch.Tensor,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder on tensors alone (what a CUDA graph captures)."""
        points = (coords, labels) if coords is not None else None
        sparse, dense = self.sam_reference.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low, iou = self.decoder(
            image_embeddings=features.to(self.dtype),
            image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse.to(self.dtype),
            dense_prompt_embeddings=dense[:1].to(self.dtype) if mask_input is None else dense.to(self.dtype),
            multimask_output=multimask_output,
        )
        return low.float(), iou.float()

    def _coords(self, a: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
        t = torch.as_tensor(a if torch.is_tensor(a) else np.asarray(a, dtype=np.float64))
        t = t.to(self.device, torch.float32)
        if not torch.isfinite(t).all():
            raise PromptError(f"{name} contains NaN or infinite values; give finite pixel coordinates")
        return t

    def _to_input_frame(self, coords: torch.Tensor, embedding: Embedding) -> torch.Tensor:
        return self.transform.apply_coords_torch(coords, embedding.original_size)

    # -- upscaling -----------------------------------------------------------------------

    @torch.inference_mode()
    def upscale(
        self,
        low_res: torch.Tensor,
        embedding: Embedding,
        out_size: tuple[int, int] | None = None,
        region: tuple[int, int, int, int] | None = None,
    ) -> torch.Tensor:
        """Low-res logits ``BxCx256x256`` -> logits at ``out_size`` (default: the original image size).

        Follows SAM's post-processing (bilinear to the padded 1024 square,
        crop the padding, bilinear to the output size). ``region = (x0, y0,
        x1, y1)`` (integer pixels of the output, ``x1``/``y1`` exclusive)
        computes only that window, equal to cropping the full result up to
        float rounding (both are within about 1e-4 of the logits' range of
        the exact resampling): a small object's mask then costs its box, not
        the frame.
        Threshold at 0 for a boolean mask.
        """
        if low_res.ndim != 4:
            raise ValueError(f"low_res must be BxCx256x256, got shape {tuple(low_res.shape)}")
        out_h, out_w = out_size if out_size is not None else embedding.original_size
        x = low_res.to(self.device, torch.float32)
        if region is None:
            return self.sam_reference.postprocess_masks(x, embedding.input_size, (out_h, out_w))
        x0, y0, x1, y1 = (int(v) for v in region)
        if not (0 <= x0 < x1 <= out_w and 0 <= y0 < y1 <= out_h):
            raise ValueError(f"region {region} must satisfy 0 <= x0 < x1 <= {out_w} and 0 <= y0 < y1 <= {out_h}")
        in_h, in_w = embedding.input_size
        x = _resample_axis(x, -2, self.img_size, in_h, out_h, y0, y1)
        return _resample_axis(x, -1, self.img_size, in_w, out_w, x0, x1)

    # -- interoperability ----------------------------------------------------------------

    @property
    def sam(self) -> Sam:
        """A :class:`Sam` running this backend, for :class:`~realtime_sam.model.predictor.SamPredictor`.

        ``SamPredictor(model.sam)`` then encodes and decodes with the fast
        paths; its prompt encoder, buffers and post-processing are the
        reference model's own.
        """
        if self._sam_view is None:
            ref = self.sam_reference
            view = Sam(image_encoder=self.encoder, prompt_encoder=ref.prompt_encoder, mask_decoder=self.decoder)  # type: ignore[arg-type]
            view.pixel_mean, view.pixel_std = ref.pixel_mean, ref.pixel_std
            self._sam_view = view.eval()
        return self._sam_view


def _linear_taps(in_len: int, out_len: int, start: int, stop: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """PyTorch's bilinear (``align_corners=False``) source taps for outputs ``start..stop-1``.

    Returns ``(i0, i1, w0, w1)``: output ``o`` = ``w0[o] * in[i0[o]] + w1[o] * in[i1[o]]``.
    Positions are computed in float64: PyTorch's float32 kernel itself is off
    by up to about 1e-4 of the logits' range at 1920 px (float32 source
    coordinates), so this is at least as close to the exact resampling.
    """
    scale = in_len / out_len
    dst = torch.arange(start, stop, dtype=torch.float64)
    src = ((dst + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=in_len - 1)
    i1 = (i0 + 1).clamp(max=in_len - 1)
    w1 = src - i0.double()
    return i0.to(device), i1.to(device), (1 - w1).float().to(device), w1.float().to(device)


def _resample_axis(x: torch.Tensor, dim: int, size: int, crop: int, out_len: int, start: int, stop: int) -> torch.Tensor:
    """Along ``dim``: bilinear to ``size``, keep ``[0, crop)``, bilinear to ``out_len``; return ``[start, stop)``.

    Only the intermediate samples that the requested outputs read are made.
    """
    i0, i1, w0, w1 = _linear_taps(crop, out_len, start, stop, x.device)
    lo, hi = int(i0.min()), int(i1.max()) + 1
    j0, j1, v0, v1 = _linear_taps(x.shape[dim], size, lo, hi, x.device)
    shape = [1] * x.ndim
    shape[dim] = -1
    mid = x.index_select(dim, j0) * v0.view(shape) + x.index_select(dim, j1) * v1.view(shape)
    return mid.index_select(dim, i0 - lo) * w0.view(shape) + mid.index_select(dim, i1 - lo) * w1.view(shape)


def load_inference_model(
    weights: str | os.PathLike | None,
    model: ModelConfig = ModelConfig(),
    options: InferenceOptions = InferenceOptions(),
    *,
    on_export: Callable[[Path], None] | None = None,
) -> InferenceModel:
    """Build ``model.model_type``, load ``weights`` strictly and prepare ``model.backend`` on ``model.device``.

    Args:
        weights: the checkpoint file, already resolved; ``None`` builds random weights. ``model.weights``
            is not read here: :func:`realtime_sam.model.loader.load_model` resolves it (cache, download) into this.
        model: model type, device, precision and backend.
        options: threads, decoder chunking, export cache.
        on_export: with an exported backend, called with the file's path as an export of the
            encoder starts (a first run, or a cached file that does not load), not for a cached one.

    Raises:
        ConfigError: unknown or unavailable device/precision/backend, or a missing optional package.
        CheckpointError: the weights file is missing, damaged or of another model.
    """
    model_type = model.model_type
    device = resolve_device(model.device)
    dtype = resolve_precision(model.precision, device)
    backend = resolve_backend(model.backend, device, model_type, dtype)
    if device.type == "cpu":
        configure_cpu_threads(options.num_threads)
        if options.tune_allocator:
            tune_cpu_allocator()
    sam = build_sam(model_type, weights)  # fp32, CPU, eval
    chunk = options.decoder_chunk
    if chunk is None and device.type == "cpu":
        chunk = _CPU_DECODER_CHUNK

    encoder: nn.Module
    if backend in EXPORTED_BACKENDS:
        from realtime_sam.model.runtime.export import load_exported_encoder

        encoder = load_exported_encoder(
            backend,
            sam.image_encoder,
            img_size=sam.img_size,
            weights=weights,
            model_type=model_type,
            cache_dir=options.cache_dir,
            num_threads=options.num_threads,
            on_export=on_export,
        )
    elif backend == "torch" and isinstance(sam.image_encoder, TinyViT):
        encoder = build_fast_tiny_vit(sam.image_encoder, device=device, dtype=dtype)
    else:
        encoder = sam.image_encoder

    if backend == "eager":
        decoder: nn.Module = sam.mask_decoder
    else:
        fused = device.type == "cpu" and fused_cpu_ops_available(dtype)
        decoder = FastMaskDecoder(sam.mask_decoder, chunk_size=chunk, fused=fused)

    # The networks in the chosen dtype on the device; the prompt encoder and buffers stay fp32.
    # FastMaskDecoder shares its small token-side modules with sam.mask_decoder, which is cast with it.
    sam = sam.to(device)
    if backend not in EXPORTED_BACKENDS:
        encoder = encoder.to(device=device, dtype=dtype)
    decoder = decoder.to(device=device, dtype=dtype)
    graphs = GraphCache(device) if model.cuda_graphs and device.type == "cuda" else None
    return InferenceModel(
        sam,
        encoder=encoder.eval(),
        decoder=decoder.eval(),
        device=device,
        dtype=dtype,
        backend=backend,
        model_type=model_type,
        graphs=graphs,
    )
