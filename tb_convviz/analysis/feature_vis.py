"""Feature visualization: for each chosen filter, the input that drives it most, many filters at once.

As in Lucid/Lucent (Olah et al., "Feature Visualization", Distill 2017) an image is optimised to
maximise one filter's mean activation. It is parameterised in a decorrelated Fourier basis (each
frequency scaled by 1/f, colours mixed through the square root of the probe's colour covariance,
then squashed into the probe's value range), and every step sees it jittered, scaled and rotated,
so that what wins is structure the filter responds to rather than adversarial high-frequency
noise. Unlike those tools, which optimise one objective at a time, every image of a batch
targets its own (layer, filter), and the loss is the sum of the objectives: in eval mode no image
affects another's gradient, and Adam's update is per element, so a batch of k images follows
exactly the k separate optimisations at the price of one batched pass per step.

The objective of filter k is its mean activation after the nonlinearity that follows the conv
(its BatchNorm folded in the way the model runs it): the mean of a linear output depends only on
the image's mean, so without the nonlinearity no pattern could win. Where none follows directly,
the positive part stands in.

Every random draw (the initial spectrum, the transforms of every step) comes from a generator
seeded by (seed, layer, filter): a filter's image at two logs differs only because the filter did,
and not because other filters shared its batch.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tb_convviz.model.capture import class_scores

Activation = Callable[[torch.Tensor], torch.Tensor]
Size = Union[int, Sequence[int], None]

DEFAULT_STEPS = 128
DEFAULT_LR = 0.05  # Lucent's render_vis default
DEFAULT_BATCH = 32
# Transformation robustness, as fractions of the image side (Lucent's standard transforms on a
# 224-px image: jitter 8 + 4 px, scale 0.9–1.1, rotation ±10°).
JITTER = 0.05
SCALES = (0.9, 1.1)
ROTATION_DEG = 10.0
SPECTRUM_SD = 0.01  # initial spectrum's standard deviation (Lucent's)
SPECTRUM_DIVISOR = 4.0  # Lucent's "magic" divisor of the inverse FFT's output
# A filter silent on the starting image (a ReLU below zero everywhere) has no gradient to follow:
# the loss adds this share of the output before the nonlinearity, which leads out of the dead zone
# and, once the filter fires, barely moves the optimum. Reported objectives never include it.
LEAK = 0.01


@dataclass(frozen=True)
class InputRange:
    """The probe's per-channel value range and colour basis: where a visualisation lives.

    `lo`, `hi` (C,): the range the squashed image spans; `colour` (C, C): the square root of the
    channel covariance of the probe scaled to that range (eigenvectors × √eigenvalues, normalised
    by the largest column), so that independent Fourier coefficients give correlated colours like
    the data's.
    """

    lo: torch.Tensor
    hi: torch.Tensor
    colour: torch.Tensor


def input_range(x: torch.Tensor) -> InputRange:
    """The `InputRange` of a probe batch x (N, C, *spatial)."""
    flat = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)  # (C, pixels)
    lo, hi = flat.min(1).values, flat.max(1).values
    hi = torch.where(hi > lo, hi, lo + 1.0)
    unit = (flat - lo[:, None]) / (hi - lo)[:, None]
    centred = unit - unit.mean(1, keepdim=True)
    cov = centred @ centred.T / max(centred.shape[1] - 1, 1)
    values, vectors = torch.linalg.eigh(cov.double())
    values = values.clamp_min(0)
    if float(values.max()) <= 0:
        colour = torch.eye(x.shape[1], dtype=torch.float64)
    else:
        colour = vectors * (values / values.max()).sqrt()[None, :]
    return InputRange(lo, hi, colour.float())


def _frequencies(shape: Sequence[int]) -> torch.Tensor:
    """|f| of every coefficient of an rfftn over `shape` (the last axis halved)."""
    axes = [torch.fft.fftfreq(n) for n in shape[:-1]] + [torch.fft.rfftfreq(shape[-1])]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.sqrt(sum(g * g for g in grids))


def fourier_scale(shape: Sequence[int]) -> torch.Tensor:
    """1/f weights of the spectrum (capped at the lowest frequency), so every scale starts equal."""
    return 1.0 / _frequencies(shape).clamp_min(1.0 / max(shape))


def spectrum_to_image(spectrum: torch.Tensor, scale: torch.Tensor, shape: Sequence[int], rng: InputRange) -> torch.Tensor:
    """Images (B, C, *shape) in the probe's value range from spectra (B, C, *freq, 2)."""
    dims = tuple(range(2, 2 + len(shape)))
    z = torch.fft.irfftn(torch.view_as_complex(scale[..., None] * spectrum), s=tuple(shape), dim=dims, norm="ortho")
    z = z / SPECTRUM_DIVISOR
    z = torch.einsum("bc...,dc->bd...", z, rng.colour.to(z))
    view = (1, -1) + (1,) * len(shape)
    return rng.lo.to(z).view(view) + (rng.hi - rng.lo).to(z).view(view) * torch.sigmoid(z)


def _seed_for(seed: int, layer: str, filter_: int) -> int:
    return zlib.crc32(f"{seed}/{layer}/{filter_}".encode()) & 0x7FFF_FFFF


def _transform_params(gen: torch.Generator, steps: int, dims: int) -> torch.Tensor:
    """(steps, 5): per step, jitter along up to three axes (fractions of the side), scale, and
    rotation (radians); 1-D inputs use the first jitter and the scale, 3-D ones rotate in the
    H–W plane."""
    u = torch.rand(steps, 5, generator=gen)
    jitter = (u[:, :3] * 2 - 1) * JITTER * 2  # in normalised coordinates ([-1, 1] spans the side)
    scale = SCALES[0] + (SCALES[1] - SCALES[0]) * u[:, 3:4]
    angle = (u[:, 4:5] * 2 - 1) * math.radians(ROTATION_DEG) * (dims >= 2)
    return torch.cat([jitter, scale, angle], 1)


def transformed(images: torch.Tensor, params: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Each image jittered, scaled and rotated by its own params (B, 5) (`_transform_params`),
    resampled to its own size; what comes in from outside the image is `fill` (C,)."""
    dims = images.dim() - 2
    b = images.shape[0]
    view = (1, -1) + (1,) * dims
    centred = images - fill.view(view)
    jitter, scale, angle = params[:, :3], params[:, 3], params[:, 4]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    if dims == 1:
        theta = torch.zeros(b, 2, 3, dtype=images.dtype, device=images.device)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1] = 1 / scale, jitter[:, 0], 1.0
        out = F.grid_sample(centred[:, :, None], F.affine_grid(theta, [b, images.shape[1], 1, images.shape[2]], align_corners=False),
                            align_corners=False)[:, :, 0]
    elif dims == 2:
        theta = torch.stack([torch.stack([cos, -sin, jitter[:, 0]], 1), torch.stack([sin, cos, jitter[:, 1]], 1)], 1)
        out = F.grid_sample(centred, F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False), align_corners=False)
    elif dims == 3:
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        theta = torch.stack([
            torch.stack([cos, -sin, zero, jitter[:, 0]], 1),
            torch.stack([sin, cos, zero, jitter[:, 1]], 1),
            torch.stack([zero, zero, one, jitter[:, 2]], 1),
        ], 1)
        out = F.grid_sample(centred, F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False), align_corners=False)
    else:
        raise ValueError(f"feature visualization takes 1-D, 2-D or 3-D inputs, not {dims}-D")
    return out + fill.view(view)


class _Reached(Exception):
    """Every hooked module has produced its output: the rest of the forward pass is not needed."""


def hooked_outputs(model: nn.Module, modules: Mapping[str, nn.Module], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{name: output} of `modules` in one forward pass of x, stopped as soon as all have run (the
    layers after the deepest one cost nothing); hooks are always removed."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_m: nn.Module, _inputs, out: torch.Tensor) -> None:
            if len(outputs) + 1 == len(modules):
                outputs[name] = out  # the last: nothing downstream runs to rewrite it
                raise _Reached
            outputs[name] = out.clone()  # an in-place op downstream must not rewrite it

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        try:
            class_scores(model(x))
        except _Reached:
            pass
    finally:
        for h in handles:
            h.remove()
    missing = set(modules) - set(outputs)
    if missing:
        raise RuntimeError(f"the forward pass never ran {sorted(missing)}")
    return outputs


def channel_objective(out: torch.Tensor, rows: torch.Tensor, filters: torch.Tensor, activation: Optional[Activation],
                      leak: float = 0.0) -> torch.Tensor:
    """(k,): image rows[i]'s mean activation of filter filters[i], after `activation` (else the
    positive part), plus `leak` × its mean before it. out: (B, F, *spatial). Only the picked
    channels are computed on (an elementwise nonlinearity needs no other)."""
    picked = out[rows, filters]
    if activation is None:
        act = picked.clamp_min(0)
    elif isinstance(activation, nn.PReLU):  # a slope per channel: applied to every channel, then picked
        act = activation(out[rows])[torch.arange(len(rows), device=out.device), filters]
    else:
        act = activation(picked)
    value = act.flatten(1).mean(1)
    return value + leak * picked.flatten(1).mean(1) if leak else value


def probe_best(model: nn.Module, modules: Mapping[str, nn.Module], x: torch.Tensor, targets: Mapping[str, Sequence[int]],
               activations: Mapping[str, Optional[Activation]]) -> dict[str, np.ndarray]:
    """{layer: (k,)} the largest objective any probe image reaches for each target filter."""
    found = {}
    with torch.no_grad():
        outputs = hooked_outputs(model, modules, x)
        for layer, filters in targets.items():
            out = outputs[layer]
            act = activations.get(layer)
            act_out = act(out) if act is not None else out.clamp_min(0)
            means = act_out[:, list(filters)].flatten(2).mean(2)  # (N, k)
            found[layer] = means.max(0).values.float().cpu().numpy()
    return found


def visualization_shape(x: torch.Tensor, size: Size) -> tuple[int, ...]:
    """The spatial shape of the images: the probe's, or `size` (an int sets every side of a 1-D or
    2-D input and the H, W of a clip)."""
    spatial = tuple(x.shape[2:])
    if size is None:
        return spatial
    if isinstance(size, int):
        return (spatial[0], size, size) if len(spatial) == 3 else (size,) * len(spatial)
    size = tuple(int(s) for s in size)
    if len(size) != len(spatial):
        raise ValueError(f"size {size} does not match the probe's {len(spatial)}-D inputs")
    return size


def feature_visualization(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    x: torch.Tensor,
    targets: Mapping[str, Sequence[int]],
    activations: Optional[Mapping[str, Optional[Activation]]] = None,
    *,
    size: Size = None,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    batch: int = DEFAULT_BATCH,
) -> dict[str, dict[str, np.ndarray]]:
    """The optimised input of every target filter, batched.

    modules: {layer: the module whose output the objective reads} (the conv, or the BatchNorm right
    after it); x: the probe (N, C, *spatial), which sets the value range, colour basis and default
    size; targets: {layer: filter indices}; activations: {layer: the nonlinearity after it}
    (missing or None: the positive part). Runs in the model's current mode (the callers hold it in
    eval) and leaves parameters' .grad alone (gradients are taken w.r.t. the images only).

    Returns {layer: {"filters": (k,) int, "images": (k, C, *size) in the model's input space,
    "objective": (k,) the mean activation the final image reaches (untransformed), "probe_best":
    (k,) the largest a probe image reaches}}.
    """
    activations = dict(activations or {})
    rng = input_range(x)
    shape = visualization_shape(x, size)
    device, dtype = x.device, x.dtype
    rng = InputRange(rng.lo.to(device, dtype), rng.hi.to(device, dtype), rng.colour.to(device, dtype))
    fill = (rng.lo + rng.hi) / 2
    scale = fourier_scale(shape).to(device, dtype)
    freq_shape = tuple(scale.shape)
    order = [(layer, int(f)) for layer in modules if layer in targets for f in targets[layer]]
    images: dict[tuple[str, int], torch.Tensor] = {}
    reached: dict[tuple[str, int], float] = {}
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        spectra, params = [], []
        for layer, f in chunk:
            gen = torch.Generator().manual_seed(_seed_for(seed, layer, f))
            spectra.append(torch.randn((x.shape[1], *freq_shape, 2), generator=gen) * SPECTRUM_SD)
            params.append(_transform_params(gen, steps, len(shape)))
        spectrum = torch.stack(spectra).to(device, dtype).requires_grad_(True)
        step_params = torch.stack(params, 1).to(device, dtype)  # (steps, B, 5)
        used = {layer: modules[layer] for layer in dict.fromkeys(layer for layer, _ in chunk)}
        rows = {layer: torch.tensor([i for i, (l, _) in enumerate(chunk) if l == layer], device=device) for layer in used}
        chans = {layer: torch.tensor([f for l, f in chunk if l == layer], device=device) for layer in used}
        optimiser = torch.optim.Adam([spectrum], lr=lr)

        def objectives(batch_images: torch.Tensor, leak: float = 0.0) -> torch.Tensor:
            outputs = hooked_outputs(model, used, batch_images)
            value = torch.zeros(len(chunk), device=device, dtype=dtype)
            for layer in used:
                found = channel_objective(outputs[layer], rows[layer], chans[layer], activations.get(layer), leak)
                value = value.index_put((rows[layer],), found)
            return value

        with torch.enable_grad():
            for t in range(steps):
                img = spectrum_to_image(spectrum, scale, shape, rng)
                loss = -objectives(transformed(img, step_params[t], fill), LEAK).sum()
                (grad,) = torch.autograd.grad(loss, [spectrum])
                spectrum.grad = grad
                optimiser.step()
                spectrum.grad = None
        with torch.no_grad():
            final = spectrum_to_image(spectrum, scale, shape, rng)
            value = objectives(final)
        for i, key in enumerate(chunk):
            images[key] = final[i].detach().float().cpu()
            reached[key] = float(value[i])
    best = probe_best(model, {l: modules[l] for l in modules if l in targets}, x, targets, activations)
    result = {}
    for layer in modules:
        if layer not in targets or not len(targets[layer]):
            continue
        keys = [(layer, int(f)) for f in targets[layer]]
        result[layer] = {
            "filters": np.asarray([f for _, f in keys], np.int64),
            "images": torch.stack([images[k] for k in keys]).numpy(),
            "objective": np.asarray([reached[k] for k in keys], np.float32),
            "probe_best": best[layer].astype(np.float32),
        }
    return result
