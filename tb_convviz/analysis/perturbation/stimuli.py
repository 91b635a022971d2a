"""The perturbed copies of the probe the analyses measure responses to: gratings, rotations, attacks,
patch shuffles and blurs. Pure tensor functions; randomness only from generators passed in, input
gradients only through torch.autograd.grad, so no .grad is written and the global RNG is untouched.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tb_convviz.analysis.perturbation.measures import channel_stats
from tb_convviz.model.capture import class_scores


def grating_batch(
    shape: Sequence[int],
    angles_deg: torch.Tensor,
    frequencies: Sequence[float],
    phases: int,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """Sinusoidal gratings (len(frequencies)·A·phases, C, H, W), ordered frequency-major then angle then phase.

    Stripes run along each angle (see the package's angle convention); every channel carries the
    same luminance grating scaled to that channel's mean and std (a sinusoid's std is
    amplitude/√2), so the layer sees inputs in the probe's range.
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


def rotate_images(x: torch.Tensor, angle_deg: float, mean: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) rotated counter-clockwise (y up) by angle_deg; pixels from outside become `mean`."""
    h, w = x.shape[-2:]
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    # affine_grid maps output to input in normalised coords (y down); the aspect terms keep it a rotation.
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return mean + F.grid_sample(x - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """model(x), checked to be class logits (N, classes), which attacks and impact need."""
    logits = class_scores(model(x))
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError("the model must return class logits shaped (N, classes)")
    return logits.float()


def _input_gradient(model: nn.Module, x: torch.Tensor, y: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂ mean cross-entropy / ∂ x, labels) via torch.autograd.grad, so no parameter's .grad is touched.

    y None takes the model's own predictions from this same forward pass.
    """
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logits = _logits(model, xr)
        y = logits.detach().argmax(dim=1) if y is None else y.to(x.device).long()
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), xr)
    return grad, y


def adversarial_inputs(
    model: nn.Module, x: torch.Tensor, y: Optional[torch.Tensor], epsilon: float, pgd_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """FGSM and L∞ PGD copies of x (N, C, *spatial) against the model's cross-entropy: 1 + pgd_steps gradient passes.

    ε is relative to the probe's per-channel std; PGD takes `pgd_steps` signed steps of 2.5ε/steps,
    projected back into the ε-ball (no clamping to a pixel range: the probe's range is unknown).
    y: labels (N,); None attacks the model's own predictions.
    """
    _, std = channel_stats(x)
    radius = epsilon * std
    grad, y = _input_gradient(model, x, y)
    x_fgsm = x + radius * grad.sign()
    x_pgd = x.clone()
    step = 2.5 * radius / max(pgd_steps, 1)
    for _ in range(pgd_steps):
        x_pgd = x_pgd + step * _input_gradient(model, x_pgd, y)[0].sign()
        x_pgd = x + torch.maximum(torch.minimum(x_pgd - x, radius), -radius)
    return x_fgsm, x_pgd


def shuffle_patches(x: torch.Tensor, patch_size: int, generator: torch.Generator) -> torch.Tensor:
    """x (N, C, H, W) cut into a grid of patch_size² patches, each image's patches permuted on their own.

    Keeps local texture, destroys global shape. Rows and columns past the last whole patch stay
    where they are. Permutations come from `generator` (a CPU torch.Generator, so a seed gives the
    same shuffle on any device).
    """
    n, c, h, w = x.shape
    rows, cols = (h // patch_size, w // patch_size) if patch_size >= 1 else (0, 0)
    if rows * cols < 2:
        raise ValueError(f"patch_size {patch_size} must be at least 1 and leave 2 or more patches in {h}x{w} images")
    height, width = rows * patch_size, cols * patch_size
    patches = x[:, :, :height, :width].reshape(n, c, rows, patch_size, cols, patch_size).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, rows * cols, c, patch_size, patch_size)
    order = torch.stack([torch.randperm(rows * cols, generator=generator) for _ in range(n)]).to(x.device)
    patches = patches[torch.arange(n, device=x.device)[:, None], order]
    out = x.clone()
    out[:, :, :height, :width] = (
        patches.reshape(n, rows, cols, c, patch_size, patch_size).permute(0, 3, 1, 4, 2, 5).reshape(n, c, height, width)
    )
    return out


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (N, C, H, W) low-passed by a separable Gaussian of std `sigma` pixels, per channel.

    Keeps shape, removes texture. The kernel reaches 3σ (at most to the image's edge) and is
    normalised; borders reflect, so a constant image stays constant.
    """
    if sigma <= 0:
        raise ValueError(f"blur_sigma must be positive, got {sigma}")
    c = x.shape[1]
    radius = min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).expand(c, 1, -1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.unsqueeze(2), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.unsqueeze(3), groups=c)
