"""Orientation of 2-D filters: tuning curves from oriented gratings, and the response to rotating the probe.

Angles follow the package's convention (see `tb_convviz.analysis.perturbation`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from tb_convviz.analysis.perturbation.engine import (
    BLANK,
    DEFAULT_MAX_BATCH_BYTES,
    Arrays,
    CombinedPass,
    Finish,
    blank_reference,
    needs_images,
    prepare,
    run_alone,
)
from tb_convviz.analysis.perturbation.measures import channel_stats, driven_energy, to_numpy, variant_means
from tb_convviz.analysis.perturbation.stimuli import grating_batch, rotate_images

DEFAULT_FREQUENCIES = (1 / 4, 1 / 8, 1 / 16)  # cycles per pixel: first layers prefer the high, deep layers the low


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


def orientation_plan(combined: CombinedPass, x: torch.Tensor, angles: int, frequencies: Sequence[float], phases: int) -> Finish:
    needs_images("orientation_tuning", x)
    angle_deg = torch.arange(angles, device=x.device, dtype=torch.float32) * (180.0 / angles)
    mean, std = channel_stats(x)
    blank_reference(combined, x)

    def energy(name: str, out: torch.Tensor, _first: int) -> torch.Tensor:
        return driven_energy(out, combined.maps(BLANK)[name])

    combined.add("gratings", grating_batch(x.shape[1:], angle_deg, frequencies, phases, mean.flatten(), std.flatten()), energy)

    def finish() -> Arrays:
        result: Arrays = {}
        freqs = torch.tensor(list(frequencies), dtype=torch.float32)
        for name, e in combined.reduced("gratings").items():
            e = e.reshape(len(frequencies), angles, phases, -1).mean(2)  # (Fq, A, F)
            best = e.amax(dim=1).argmax(dim=0)  # (F,) frequency with the strongest peak
            tuning = e.permute(2, 0, 1)[torch.arange(e.shape[2]), best]  # (F, A)
            osi, preferred = orientation_selectivity(tuning, angle_deg)
            result[name] = {
                "rotation_angles": to_numpy(angle_deg),
                "tuning": to_numpy(tuning),
                "tuning_frequency": to_numpy(freqs[best.cpu()]),
                "osi": to_numpy(osi),
                "preferred_orientation": to_numpy(preferred),
            }
        return result

    return finish


def orientation_tuning(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    angles: int = 12,
    frequencies: Sequence[float] = DEFAULT_FREQUENCIES,
    phases: int = 4,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
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
    x = prepare(model, x)
    return run_alone(model, layers, max_batch_bytes, lambda c: orientation_plan(c, x, angles, frequencies, phases))


def rotation_plan(combined: CombinedPass, x: torch.Tensor, angles: int) -> Finish:
    needs_images("rotation_response", x)
    _, _, h, w = x.shape
    mean, _ = channel_stats(x)
    yy, xx = torch.meshgrid(
        torch.arange(h, device=x.device) - (h - 1) / 2, torch.arange(w, device=x.device) - (w - 1) / 2, indexing="ij"
    )
    disc = ((yy**2 + xx**2) <= (min(h, w) / 2) ** 2).to(x.dtype)
    x = mean + (x - mean) * disc
    angle_deg = [a * 180.0 / angles for a in range(angles)]

    def energy(_name: str, out: torch.Tensor, _first: int) -> torch.Tensor:
        return (out**2).mean(-1)

    combined.add("rotations", torch.cat([rotate_images(x, a, mean) for a in angle_deg]), energy)

    def finish() -> Arrays:
        result: Arrays = {}
        for name, e in combined.reduced("rotations").items():
            e = variant_means(e, angles).T  # (F, A)
            rel = e / e[:, :1].clamp_min(1e-30)
            result[name] = {"rotation_angles": np.asarray(angle_deg, dtype=np.float32), "rotation_response": to_numpy(rel)}
        return result

    return finish


def rotation_response(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    angles: int = 12,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """Energy (mean a² over images and positions) on the probe rotated by each angle, relative to unrotated.

    Images are first cut to their inscribed disc (outside → channel mean) so rotating never moves
    corners in or out; natural images give weak, broad curves. x: (N, C, H, W).
    Keys: "rotation_angles" (A,) degrees; "rotation_response" (F, A), 1.0 at 0°.
    """
    x = prepare(model, x)
    return run_alone(model, layers, max_batch_bytes, lambda c: rotation_plan(c, x, angles))
