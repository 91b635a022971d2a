"""How each conv filter responds when the probe is perturbed: orientation, noise, attacks, counterfactuals.

Every function takes the model (in eval mode, as `observe.untouched` leaves it), the chosen conv
layers as {name: module}, and a probe batch x (N, C, *spatial), and returns {layer name: {key:
numpy array}} with one row per filter (the layer's output channel). All layers are measured in
the same forward pass of each perturbed batch. Nothing here writes .grad, leaves a hook, changes
a weight or draws from the global RNG: noise comes from a local, seeded torch.Generator and input
gradients from torch.autograd.grad.

Angle convention (tuning, rotation): degrees in [0, 180), counter-clockwise from the image's
horizontal axis with x to the right and y up (towards row 0). An orientation is the direction the
stripes (iso-intensity lines) run along: 0° is horizontal stripes, i.e. a horizontal edge, which
a vertical intensity gradient (dI/drow) detects; 90° is vertical stripes.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tb_convviz.capture import as_model_input, run_with_hooks

Arrays = dict[str, dict[str, np.ndarray]]
Counterfactual = Callable[[torch.Tensor], torch.Tensor]
# Reduces one layer's output for a chunk of a perturbed batch to (chunk, filters); gets the chunk's offset.
Reducer = Callable[[str, torch.Tensor, int], torch.Tensor]

DEFAULT_SIGMAS = (0.1, 0.25, 0.5, 1.0)
DEFAULT_FREQUENCIES = (1 / 4, 1 / 8, 1 / 16)  # cycles per pixel: first layers prefer the high, deep layers the low
DEFAULT_SHIFTS = (0.125, 0.25, 0.5)
ROBUST_Z_FLAG = 3.5  # Iglewicz & Hoaglin's cut-off for the modified z-score: an outlier, not just a large value
# When an edit leaves most filters unchanged, their MAD is ~0 and specks of change score huge z;
# a flagged filter must also move its mean |activation| by at least this fraction.
MIN_FLAGGED_CHANGE = 0.05


# ---------------------------------------------------------------- shared machinery


def _reduced_forward(
    model: nn.Module, layers: Mapping[str, nn.Module], batch: torch.Tensor, reduce: Reducer, max_batch: int
) -> dict[str, torch.Tensor]:
    """Run `batch` in chunks of ≤ max_batch images, reducing each layer's output inside its hook.

    Reducing in the hook (instead of recording) keeps memory at one chunk, and reads the conv
    output before a downstream in-place op (ReLU(inplace=True)) can overwrite it.
    Returns {name: (len(batch), filters)}.
    """
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with torch.no_grad():
        for start in range(0, batch.shape[0], max_batch):
            chunk = batch[start : start + max_batch]

            def observe(name: str, out: torch.Tensor, start: int = start) -> None:
                parts[name].append(reduce(name, out.float(), start))

            run_with_hooks(model, layers, chunk, record=False, edit=observe)
    return {name: torch.cat(p) for name, p in parts.items()}


def _variant_means(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    batch: torch.Tensor,
    reduce: Reducer,
    max_batch: int,
    variants: int,
    n: int,
) -> dict[str, torch.Tensor]:
    """`batch` is `variants` copies of the n probe images, stacked variant-major ((variants · n, ...));
    reduce each image's output as `_reduced_forward` does, then average over the n images.
    Returns {name: (variants, filters)}.
    """
    per_image = _reduced_forward(model, layers, batch, reduce, max_batch)
    return {name: r.reshape(variants, n, -1).mean(1) for name, r in per_image.items()}


def _layer_maps(model: nn.Module, layers: Mapping[str, nn.Module], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each layer's output on x as (N, filters, positions), float, detached."""
    maps: dict[str, torch.Tensor] = {}

    def keep(name: str, out: torch.Tensor) -> None:
        maps[name] = out.detach().float().flatten(2).clone()

    with torch.no_grad():
        run_with_hooks(model, layers, x, record=False, edit=keep)
    return maps


def _map_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Uncentred cosine of maps (..., positions) → (...); two all-zero maps count as identical (1)."""
    num = (a * b).sum(-1)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    both_zero = (a.abs().amax(-1) == 0) & (b.abs().amax(-1) == 0)
    cos = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))
    return torch.where(both_zero, torch.ones_like(cos), cos)


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a batch, shaped (1, C, 1, ...) to broadcast over it."""
    flat = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    std = flat.std(dim=1) if flat.shape[1] > 1 else torch.zeros(x.shape[1], device=x.device)
    return flat.mean(dim=1).reshape(shape), std.reshape(shape)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _prepare(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return as_model_input(model, x.detach())


# ---------------------------------------------------------------- orientation (2-D inputs)


def grating_batch(
    shape: Sequence[int],
    angles_deg: torch.Tensor,
    frequencies: Sequence[float],
    phases: int,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """Sinusoidal gratings (len(frequencies)·A·phases, C, H, W), ordered frequency-major then angle then phase.

    Stripes run along each angle (see the module's convention); every channel carries the same
    luminance grating scaled to that channel's mean and std (a sinusoid's std is amplitude/√2),
    so the layer sees inputs in the probe's range.
    """
    c, h, w = shape
    dev = mean.device
    xs = torch.arange(w, device=dev, dtype=torch.float32) - (w - 1) / 2
    ys = (h - 1) / 2 - torch.arange(h, device=dev, dtype=torch.float32)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    theta = torch.deg2rad(angles_deg.to(dev).float()).reshape(1, -1, 1, 1, 1)
    freq = torch.tensor(list(frequencies), device=dev, dtype=torch.float32).reshape(-1, 1, 1, 1, 1)
    phase = (torch.arange(phases, device=dev, dtype=torch.float32) * (2 * math.pi / phases)).reshape(1, 1, -1, 1, 1)
    across = -xx * torch.sin(theta) + yy * torch.cos(theta)  # distance across the stripes
    wave = torch.sin(2 * math.pi * freq * across + phase)  # (Fq, A, P, H, W)
    wave = wave.reshape(-1, 1, h, w)
    return mean.reshape(1, c, 1, 1) + math.sqrt(2) * std.reshape(1, c, 1, 1) * wave


def orientation_selectivity(tuning: torch.Tensor, angles_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OSI = 1 − circular variance over doubled angles, and the preferred orientation in degrees.

    tuning (F, A) non-negative responses at angles (A,) covering [0, 180) evenly → (F,), (F,).
    A flat (or all-zero) curve gives 0; a response at one angle only gives 1.
    """
    doubled = torch.deg2rad(2 * angles_deg.to(tuning.device).float())
    vec = torch.complex(tuning @ torch.cos(doubled), tuning @ torch.sin(doubled))
    total = tuning.sum(dim=1)
    osi = torch.where(total > 0, vec.abs() / total.clamp_min(1e-30), torch.zeros_like(total))
    preferred = torch.rad2deg(torch.angle(vec) / 2) % 180
    return osi, preferred


def orientation_tuning(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    angles: int = 12,
    frequencies: Sequence[float] = DEFAULT_FREQUENCIES,
    phases: int = 4,
    max_batch: int = 128,
) -> Arrays:
    """Orientation tuning of every filter from oriented gratings matched to the probe's size and channel stats.

    Response = grating-driven energy: mean over positions of (a(grating) − a(blank))², where blank
    is the probe's mean colour. Squaring keeps a linear filter's response from averaging to zero over
    a symmetric grating; subtracting the blank removes bias and DC so only orientation-driven
    signal counts. Energy is averaged over `phases`; per filter the spatial frequency with the
    strongest peak is kept. x: (N, C, H, W).

    Keys: "rotation_angles" (A,) degrees; "tuning" (F, A); "tuning_frequency" (F,) cycles/pixel;
    "osi" (F,) in [0, 1]; "preferred_orientation" (F,) degrees.
    """
    if x.dim() != 4:
        raise ValueError(f"orientation_tuning: needs 2-D images (N, C, H, W), got shape {tuple(x.shape)}")
    x = _prepare(model, x)
    angle_deg = torch.arange(angles, device=x.device, dtype=torch.float32) * (180.0 / angles)
    mean, std = _channel_stats(x)
    gratings = grating_batch(x.shape[1:], angle_deg, frequencies, phases, mean.flatten(), std.flatten())
    blank = _layer_maps(model, layers, mean.expand(1, *x.shape[1:]).contiguous())

    def energy(name: str, out: torch.Tensor, _start: int) -> torch.Tensor:
        return ((out.flatten(2) - blank[name]) ** 2).mean(-1)

    per_grating = _reduced_forward(model, layers, gratings, energy, max_batch)
    result: Arrays = {}
    for name, e in per_grating.items():
        e = e.reshape(len(frequencies), angles, phases, -1).mean(2)  # (Fq, A, F)
        best = e.amax(dim=1).argmax(dim=0)  # (F,) frequency with the strongest peak
        tuning = e.permute(2, 0, 1)[torch.arange(e.shape[2]), best]  # (F, A)
        osi, preferred = orientation_selectivity(tuning, angle_deg)
        freqs = torch.tensor(list(frequencies), dtype=torch.float32)
        result[name] = {
            "rotation_angles": _np(angle_deg),
            "tuning": _np(tuning),
            "tuning_frequency": _np(freqs[best.cpu()]),
            "osi": _np(osi),
            "preferred_orientation": _np(preferred),
        }
    return result


def rotate_images(x: torch.Tensor, angle_deg: float, mean: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) rotated counter-clockwise (y up) by angle_deg; pixels from outside become `mean`."""
    h, w = x.shape[-2:]
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    # affine_grid maps output to input in normalised coords (y down); the aspect terms keep it a rotation.
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return mean + F.grid_sample(x - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotation_response(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    angles: int = 12,
    max_batch: int = 128,
) -> Arrays:
    """Energy (mean a² over images and positions) on the probe rotated by each angle, relative to unrotated.

    Images are first cut to their inscribed disc (outside → channel mean) so rotating never moves
    corners in or out; natural images give weak, broad curves. x: (N, C, H, W).
    Keys: "rotation_angles" (A,) degrees; "rotation_response" (F, A), 1.0 at 0°.
    """
    if x.dim() != 4:
        raise ValueError(f"rotation_response: needs 2-D images (N, C, H, W), got shape {tuple(x.shape)}")
    x = _prepare(model, x)
    n, _, h, w = x.shape
    mean, _ = _channel_stats(x)
    yy, xx = torch.meshgrid(
        torch.arange(h, device=x.device) - (h - 1) / 2, torch.arange(w, device=x.device) - (w - 1) / 2, indexing="ij"
    )
    disc = ((yy**2 + xx**2) <= (min(h, w) / 2) ** 2).to(x.dtype)
    x = mean + (x - mean) * disc
    angle_deg = [a * 180.0 / angles for a in range(angles)]
    batch = torch.cat([rotate_images(x, a, mean) for a in angle_deg])

    def energy(_name: str, out: torch.Tensor, _start: int) -> torch.Tensor:
        return (out.flatten(2) ** 2).mean(-1)

    result: Arrays = {}
    for name, e in _variant_means(model, layers, batch, energy, max_batch, angles, n).items():
        e = e.T  # (F, A)
        rel = e / e[:, :1].clamp_min(1e-30)
        result[name] = {"rotation_angles": np.asarray(angle_deg, dtype=np.float32), "rotation_response": _np(rel)}
    return result


# ---------------------------------------------------------------- sequences (1-D inputs)


def sequence_symmetry(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    shifts: Sequence[float] = DEFAULT_SHIFTS,
    max_batch: int = 128,
) -> Arrays:
    """For 1-D inputs (N, C, L): does each filter's map follow a circular shift or a time reversal of the input?

    "shift" (F, S): cosine of a(roll(x, s)) with roll(a(x), s·L_out/L) — 1 for a shift-equivariant
    filter, lower where padding or stride break it; shifts are fractions of L ("shift_fractions" (S,)).
    "reversal" (F,): cosine of a(flip(x)) with flip(a(x)) — 1 for a palindromic kernel, −1 for an
    antisymmetric one, near 0 for a direction-selective one. Cosines are averaged over images.
    """
    if x.dim() != 3:
        raise ValueError(f"sequence_symmetry: needs 1-D sequences (N, C, L), got shape {tuple(x.shape)}")
    x = _prepare(model, x)
    n, length = x.shape[0], x.shape[-1]
    clean = _layer_maps(model, layers, x)
    steps = [int(round(s * length)) for s in shifts]
    batch = torch.cat([torch.roll(x, st, dims=-1) for st in steps] + [torch.flip(x, dims=[-1])])

    def compare(name: str, out: torch.Tensor, start: int) -> torch.Tensor:
        a = out.flatten(2)
        idx = torch.arange(start, start + a.shape[0], device=a.device)
        ref = clean[name][idx % n]
        which = (idx // n).tolist()
        ref = torch.stack(
            [
                torch.flip(r, dims=[-1])
                if k == len(steps)
                else torch.roll(r, int(round(steps[k] * r.shape[-1] / length)), dims=-1)
                for r, k in zip(ref, which)
            ]
        )
        return _map_cosine(a, ref)

    result: Arrays = {}
    for name, cos in _variant_means(model, layers, batch, compare, max_batch, len(steps) + 1, n).items():
        result[name] = {  # cos: (S + 1, F)
            "shift_fractions": np.asarray(shifts, dtype=np.float32),
            "shift": _np(cos[:-1].T),
            "reversal": _np(cos[-1]),
        }
    return result


# ---------------------------------------------------------------- noise


def noise_stability(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    seed: int = 0,
    max_batch: int = 128,
) -> Arrays:
    """Cosine of each filter's map under Gaussian noise with its clean map, averaged over images.

    Noise std is σ × the probe's per-channel std; drawn from a local torch.Generator seeded with
    `seed` (deterministic, global RNG untouched). Uncentred cosine, so a filter that mostly passes
    the image's mean (a DC kernel) stays near 1. x: (N, C, *spatial).
    Keys: "noise_sigmas" (S,); "stability" (F, S).
    """
    x = _prepare(model, x)
    n = x.shape[0]
    _, std = _channel_stats(x)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn((len(sigmas),) + tuple(x.shape), generator=gen, device=x.device, dtype=x.dtype)
    scale = torch.tensor(list(sigmas), device=x.device, dtype=x.dtype).reshape(-1, *([1] * x.dim()))
    batch = (x.unsqueeze(0) + scale * std.unsqueeze(0) * noise).reshape(-1, *x.shape[1:])
    clean = _layer_maps(model, layers, x)

    def compare(name: str, out: torch.Tensor, start: int) -> torch.Tensor:
        idx = torch.arange(start, start + out.shape[0], device=out.device) % n
        return _map_cosine(out.flatten(2), clean[name][idx])

    result: Arrays = {}
    for name, cos in _variant_means(model, layers, batch, compare, max_batch, len(sigmas), n).items():
        result[name] = {
            "noise_sigmas": np.asarray(sigmas, dtype=np.float32),
            "stability": _np(cos.T),
        }
    return result


# ---------------------------------------------------------------- adversarial


def _relative_change(model: nn.Module, layers: Mapping[str, nn.Module], x: torch.Tensor, x_new: torch.Tensor,
                     clean: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """‖a(x_new) − a(x)‖ / ‖a(x)‖ per filter, norms over all images and positions → {name: (F,)}."""
    moved = _layer_maps(model, layers, x_new)
    out = {}
    for name, a in clean.items():
        diff = (moved[name] - a).transpose(0, 1).flatten(1).norm(dim=1)
        out[name] = diff / a.transpose(0, 1).flatten(1).norm(dim=1).clamp_min(1e-30)
    return out


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """model(x), checked to be class logits (N, classes), which attacks and impact need."""
    logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError("the model must return class logits shaped (N, classes)")
    return logits.float()


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂ mean cross-entropy / ∂ x via torch.autograd.grad, so no parameter's .grad is touched."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(_logits(model, xr), y), xr)
    return grad


def adversarial_change(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: Optional[torch.Tensor] = None,
    *,
    epsilon: float = 0.1,
    pgd_steps: int = 3,
) -> Arrays:
    """Relative activation change per filter under FGSM and an L∞ PGD attack on the model's cross-entropy.

    ε is relative to the probe's per-channel std; PGD takes `pgd_steps` signed steps of 2.5ε/steps,
    projected back into the ε-ball (no clamping to a pixel range: the probe's range is unknown).
    y: labels (N,); None attacks the model's own predictions. Change is ‖Δa‖/‖a‖ over all images
    and positions. Keys: "adv_epsilon" () ; "fgsm" (F,); "pgd" (F,).
    """
    x = _prepare(model, x)
    if y is None:
        with torch.no_grad():
            y = _logits(model, x).argmax(dim=1)
    y = y.to(x.device).long()
    _, std = _channel_stats(x)
    radius = epsilon * std
    clean = _layer_maps(model, layers, x)
    x_fgsm = x + radius * _input_gradient(model, x, y).sign()
    x_pgd = x.clone()
    step = 2.5 * radius / max(pgd_steps, 1)
    for _ in range(pgd_steps):
        x_pgd = x_pgd + step * _input_gradient(model, x_pgd, y).sign()
        x_pgd = x + torch.maximum(torch.minimum(x_pgd - x, radius), -radius)
    fgsm = _relative_change(model, layers, x, x_fgsm, clean)
    pgd = _relative_change(model, layers, x, x_pgd, clean)
    return {
        name: {"adv_epsilon": np.asarray(epsilon, dtype=np.float32), "fgsm": _np(fgsm[name]), "pgd": _np(pgd[name])}
        for name in layers
    }


# ---------------------------------------------------------------- counterfactuals


def robust_z(values: torch.Tensor) -> torch.Tensor:
    """Modified z-score 0.6745·(v − median)/MAD (Iglewicz & Hoaglin) over a layer's filters (F,) → (F,).

    When over half the filters tie (MAD = 0) the mean absolute deviation ×1.2533 stands in; when
    all are equal every score is 0.
    """
    med = values.median()
    dev = (values - med).abs()
    mad = dev.median()
    if mad > 0:
        return 0.6745 * (values - med) / mad
    meanad = dev.mean()
    if meanad > 0:
        return (values - med) / (1.253314 * meanad)
    return torch.zeros_like(values)


def counterfactual_sensitivity(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    counterfactuals: Mapping[str, Counterfactual],
) -> Arrays:
    """How each filter changes when the user's edit(batch) → batch is applied to the probe.

    Per counterfactual `c`: "cf/<c>" (F,) signed relative change of mean |activation|
    ((after − before)/before); "cf/<c>/cosine" (F,) cosine of maps, averaged over images;
    "cf/<c>/z" (F,) robust z-score of |cf/<c>| within the layer; "cf/<c>/flag" (F,) bool, z > 3.5
    and |cf/<c>| ≥ 0.05: the filter reacts far more than the layer's others, i.e. it detects what
    the edit removes.
    """
    x = _prepare(model, x)
    clean = _layer_maps(model, layers, x)
    result: Arrays = {name: {} for name in layers}
    for cf_name, edit in counterfactuals.items():
        with torch.no_grad():
            edited = edit(x.clone())
        if not isinstance(edited, torch.Tensor) or edited.shape != x.shape:
            raise ValueError(f"counterfactual {cf_name!r} must return a tensor shaped {tuple(x.shape)}")
        moved = _layer_maps(model, layers, edited.to(x.device).float())
        for name, a in clean.items():
            before = a.abs().mean(dim=(0, 2))
            change = (moved[name].abs().mean(dim=(0, 2)) - before) / before.clamp_min(1e-30)
            z = robust_z(change.abs())
            key = f"cf/{cf_name}"
            result[name][key] = _np(change)
            result[name][key + "/cosine"] = _np(_map_cosine(moved[name], a).mean(0))
            result[name][key + "/z"] = _np(z)
            result[name][key + "/flag"] = _np((z > ROBUST_Z_FLAG) & (change.abs() >= MIN_FLAGGED_CHANGE))
    return result


# ---------------------------------------------------------------- the default set


def perturbation_responses(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: Optional[torch.Tensor] = None,
    *,
    counterfactuals: Optional[Mapping[str, Counterfactual]] = None,
    angles: int = 12,
    noise_sigmas: Sequence[float] = DEFAULT_SIGMAS,
    epsilon: float = 0.1,
    pgd_steps: int = 3,
    phases: int = 2,
    rotate_probe: bool = False,
    seed: int = 0,
    max_batch: int = 128,
) -> Arrays:
    """The cheap default set, merged per layer: orientation (2-D inputs) or shift/reversal (1-D),
    noise stability, FGSM/PGD change, and the given counterfactuals.

    Cheap because it runs every logged epoch: gratings in two quadrature phases (the energy of a
    linear filter over a quadrature pair does not depend on phase), and the rotated-probe curve
    only on request (`rotate_probe=True`), since the grating curve already gives the tuning.

    x: (N, C, *spatial); y: labels (N,) or None (attacks then use the model's predictions).
    Orientation needs gratings, so 3-D inputs get none (a warning says so). The adversarial pair is
    skipped with a warning when the model does not return (N, classes) logits.
    Keys: see orientation_tuning, rotation_response, sequence_symmetry, noise_stability,
    adversarial_change and counterfactual_sensitivity.
    """
    parts: list[Arrays] = []
    if x.dim() == 4:
        parts.append(orientation_tuning(model, layers, x, angles=angles, phases=phases, max_batch=max_batch))
        if rotate_probe:
            parts.append(rotation_response(model, layers, x, angles=angles, max_batch=max_batch))
    elif x.dim() == 3:
        parts.append(sequence_symmetry(model, layers, x, max_batch=max_batch))
    else:
        warnings.warn(f"perturbation_responses: no orientation analysis for {x.dim() - 2}-D inputs", stacklevel=2)
    parts.append(noise_stability(model, layers, x, sigmas=noise_sigmas, seed=seed, max_batch=max_batch))
    try:
        parts.append(adversarial_change(model, layers, x, y, epsilon=epsilon, pgd_steps=pgd_steps))
    except ValueError as err:
        warnings.warn(f"perturbation_responses: adversarial analysis skipped: {err}", stacklevel=2)
    if counterfactuals:
        parts.append(counterfactual_sensitivity(model, layers, x, counterfactuals))
    return {name: {k: v for part in parts for k, v in part[name].items()} for name in layers}
