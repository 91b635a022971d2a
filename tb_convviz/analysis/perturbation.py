"""How each conv filter responds to perturbed probes: orientation, noise, attacks, counterfactuals, shape vs texture.

Every function takes the model (in eval mode, as `observe.untouched` leaves it), the chosen conv
layers as {name: module}, and a probe batch x (N, C, *spatial), and returns {layer name: {key:
numpy array}} with one row per filter (the layer's output channel).

Every perturbed copy of the probe that the analyses need (gratings, noisy copies, adversarial
copies, counterfactual edits, rotations, shifts, patch-shuffled and blurred copies) goes through the model in one `CombinedPass`:
as few hooked no-grad passes as `max_batch_bytes` allows, each shared by every layer and every
analysis, with each copy's statistic reduced inside the hook so no full map of a perturbed copy is
kept. Each analysis is a plan (the blocks of inputs it adds and how to reduce them) and a finish
(statistics → arrays); the public functions run one plan, `perturbation_responses` runs them all
in the same passes. Only the attacks' input gradients need passes of their own.

Nothing here writes .grad, leaves a hook, changes a weight or draws from the global RNG: noise
and patch shuffles come from local, seeded torch.Generators and input gradients from
torch.autograd.grad.

Angle convention (tuning, rotation): degrees in [0, 180), counter-clockwise from the image's
horizontal axis with x to the right and y up (towards row 0). An orientation is the direction the
stripes (iso-intensity lines) run along: 0° is horizontal stripes, i.e. a horizontal edge, which
a vertical intensity gradient (dI/drow) detects; 90° is vertical stripes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tb_convviz.capture import as_model_input, run_with_hooks
from tb_convviz.notices import notice

Arrays = dict[str, dict[str, np.ndarray]]
Counterfactual = Callable[[torch.Tensor], torch.Tensor]
# Reduces one layer's float output for some rows of a block, (rows, filters, positions), to
# (rows, ...) statistics; gets the block index of the first row (row r is probe image r % N).
Reducer = Callable[[str, torch.Tensor, int], torch.Tensor]
# Turns the reduced statistics of a plan's blocks into its arrays, once the passes have run.
Finish = Callable[[], Arrays]

DEFAULT_SIGMAS = (0.1, 0.25, 0.5, 1.0)
DEFAULT_FREQUENCIES = (1 / 4, 1 / 8, 1 / 16)  # cycles per pixel: first layers prefer the high, deep layers the low
DEFAULT_SHIFTS = (0.125, 0.25, 0.5)
# Bound on one pass, in bytes of hooked layer outputs (as float32) summed over every layer and
# image: as if all were alive at once, which a no-grad pass never holds, so the real peak is lower.
DEFAULT_MAX_BATCH_BYTES = 1 << 30
ROBUST_Z_FLAG = 3.5  # Iglewicz & Hoaglin's cut-off for the modified z-score: an outlier, not just a large value
# A relative change below this is no reaction. When an edit leaves most filters unchanged, their
# MAD is ~0 and specks of change score huge z, so a flagged filter must also move its mean
# |activation| by at least this much; and a shape–texture index shrinks to 0 when the two
# sensitivities sum to less.
MIN_CHANGE = 0.05

CLEAN = "clean"  # reference block: the probe itself
BLANK = "blank"  # reference block: one image of the probe's mean colour
# (rank, ranks, gather): how several processes split the perturbed rows; gather(obj) → every rank's
# obj on the rank that assembles them (a list), None on the others.
RowShare = tuple[int, int, Callable[[Any], Optional[list]]]


# ---------------------------------------------------------------- shared machinery


@dataclass(frozen=True)
class _Block:
    """Inputs (rows, C, *spatial) of one kind of perturbed copy; `reduce` None keeps full maps (a reference)."""

    key: str
    inputs: torch.Tensor
    reduce: Optional[Reducer]


class CombinedPass:
    """All the input variants several analyses need, pushed through the model in shared hooked passes.

    Analyses declare blocks first: `reference(key, inputs)` keeps a block's full maps (the clean
    probe, the blank image) for the reducers of other blocks; `add(key, inputs, reduce)` reduces a
    block inside the hook. `run()` makes the passes, references first (so their maps are complete
    before any reducer reads them). The first pass carries one image and measures the bytes its
    hooked outputs take (as float32, all layers summed); every later pass carries as many images as
    fit `max_batch_bytes`, cutting across blocks. Afterwards `maps(key)` gives {layer: (rows,
    filters, positions)} of a reference and `reduced(key)` {layer: (rows, ...)} of another block.
    `passes` lists the images of each pass.
    """

    def __init__(
        self, model: nn.Module, layers: Mapping[str, nn.Module], max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    ) -> None:
        if max_batch_bytes < 1:
            raise ValueError(f"max_batch_bytes must be at least 1, got {max_batch_bytes}")
        self.model, self.layers, self.max_batch_bytes = model, layers, max_batch_bytes
        self.passes: list[int] = []
        self._blocks: dict[str, _Block] = {}
        self._maps: dict[str, dict[str, torch.Tensor]] = {}
        self._reduced: dict[str, dict[str, torch.Tensor]] = {}

    def reference(self, key: str, inputs: torch.Tensor) -> None:
        """Keep the full maps of `inputs` under `key`; a second call with the same key is the same block."""
        if key not in self._blocks:
            self._blocks[key] = _Block(key, as_model_input(self.model, inputs.detach()), None)

    def add(self, key: str, inputs: torch.Tensor, reduce: Reducer) -> None:
        """Reduce each layer's output on `inputs` with `reduce` inside the hook."""
        if key in self._blocks:
            raise ValueError(f"a block {key!r} was already added")
        self._blocks[key] = _Block(key, as_model_input(self.model, inputs.detach()), reduce)

    def maps(self, key: str) -> dict[str, torch.Tensor]:
        return self._maps[key]

    def reduced(self, key: str) -> dict[str, torch.Tensor]:
        return self._reduced[key]

    def run(self, share: Optional[RowShare] = None) -> bool:
        """Make the passes over every block declared so far (once); True when the results are here.

        share (rank, ranks, gather): this process makes the reference passes and its contiguous
        share of the other blocks' rows; `gather(obj)` hands every rank's reductions to one rank
        (a list there, None elsewhere), which assembles them and alone returns True.
        """
        blocks = sorted(self._blocks.values(), key=lambda b: b.reduce is not None)  # stable: references first
        parts: dict[str, dict[str, list[torch.Tensor]]] = {b.key: {name: [] for name in self.layers} for b in blocks}
        segments = [(b, 0, len(b.inputs)) for b in blocks if len(b.inputs) and (share is None or b.reduce is None)]
        if share is not None:
            segments += _row_share([b for b in blocks if b.reduce is not None and len(b.inputs)], share[0], share[1])
        error: Optional[Exception] = None
        try:
            self._make_passes(segments, parts)
        except Exception as e:  # noqa: BLE001 - under a share the gather must still meet; re-raised below
            if share is None:
                raise
            error = e
        reduced = {b.key: {name: torch.cat(p) for name, p in parts[b.key].items() if p} for b in blocks if b.reduce is not None}
        if share is None:
            self._reduced = reduced
            return True
        on_cpu = {key: {name: t.cpu() for name, t in layers.items()} for key, layers in reduced.items()}  # gloo pickles CPU tensors
        gathered = share[2](f"{type(error).__name__}: {error}" if error is not None else on_cpu)
        if error is not None:
            raise error
        if gathered is None:
            return False
        for rank, part in enumerate(gathered):
            if isinstance(part, str):
                raise RuntimeError(f"rank {rank} failed its share of the perturbation passes ({part})")
        for block in blocks:
            if block.reduce is not None:
                self._reduced[block.key] = {
                    name: torch.cat([p[block.key][name].to(block.inputs.device) for p in gathered if name in p.get(block.key, {})])
                    for name in self.layers
                }
        return True

    def _make_passes(self, segments: list[tuple[_Block, int, int]], parts: dict[str, dict[str, list[torch.Tensor]]]) -> None:
        """Hooked passes over the rows of `segments` (block, first row, end), in order."""
        pending = list(segments)
        size = 1
        while pending:
            pieces: list[tuple[_Block, int, int]] = []  # (block, rows lo … hi) of this pass
            room = size
            while pending and room:
                block, lo, end = pending[0]
                hi = min(end, lo + room)
                pieces.append((block, lo, hi))
                room -= hi - lo
                if hi == end:
                    pending.pop(0)
                else:
                    pending[0] = (block, hi, end)
            image_bytes = self._pass(pieces, parts)
            if len(self.passes) == 1:
                size = max(1, self.max_batch_bytes // max(image_bytes, 1))

    def _pass(self, pieces: list[tuple[_Block, int, int]], parts: dict[str, dict[str, list[torch.Tensor]]]) -> int:
        """One hooked no-grad pass over the rows `pieces` name; returns the hooked bytes per image."""
        chunk = torch.cat([block.inputs[lo:hi] for block, lo, hi in pieces])
        self.passes.append(len(chunk))
        image_bytes = 0

        def observe(name: str, out: torch.Tensor) -> None:
            nonlocal image_bytes
            maps = out.detach().float().flatten(2)
            image_bytes += maps[0].numel() * maps.element_size()
            at = 0
            for block, lo, hi in pieces:
                rows = maps[at : at + hi - lo]
                at += hi - lo
                if block.reduce is not None:
                    parts[block.key][name].append(block.reduce(name, rows, lo))
                    continue
                # A copy: an in-place op downstream (ReLU(inplace=True)) would rewrite the output.
                parts[block.key][name].append(rows.clone())
                if hi == len(block.inputs):
                    self._maps.setdefault(block.key, {})[name] = torch.cat(parts[block.key][name])
                    parts[block.key][name].clear()

        with torch.no_grad():
            run_with_hooks(self.model, self.layers, chunk, record=False, edit=observe)
        return image_bytes


def _row_share(blocks: list[_Block], rank: int, ranks: int) -> list[tuple[_Block, int, int]]:
    """The rank's contiguous share of all the blocks' rows, in order: (block, first row, end)."""
    total = sum(len(b.inputs) for b in blocks)
    start, stop = total * rank // ranks, total * (rank + 1) // ranks
    segments, offset = [], 0
    for block in blocks:
        lo, hi = max(start - offset, 0), min(stop - offset, len(block.inputs))
        if lo < hi:
            segments.append((block, lo, hi))
        offset += len(block.inputs)
    return segments


def _run_alone(
    model: nn.Module, layers: Mapping[str, nn.Module], max_batch_bytes: int, plan: Callable[[CombinedPass], Finish]
) -> Arrays:
    """One analysis on its own: its plan, its passes, its finish."""
    combined = CombinedPass(model, layers, max_batch_bytes)
    finish = plan(combined)
    combined.run()
    return finish()


def _image_index(first: int, rows: int, n: int, device: torch.device) -> torch.Tensor:
    """Probe image of each row first … first + rows of a block that stacks copies of the n probe images."""
    return torch.arange(first, first + rows, device=device) % n


def _variant_means(per_row: torch.Tensor, variants: int) -> torch.Tensor:
    """(variants · n, F) statistics of a variant-major block → (variants, F) averaged over the n probe images."""
    return per_row.reshape(variants, -1, per_row.shape[-1]).mean(1)


def _map_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Uncentred cosine of maps (..., positions) → (...); two all-zero maps count as identical (1)."""
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    den = na * nb
    cos = torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(1e-30), torch.zeros_like(den))
    return torch.where((na == 0) & (nb == 0), torch.ones_like(cos), cos)


def _driven_energy(maps: torch.Tensor, blank: torch.Tensor) -> torch.Tensor:
    """Mean over positions of (a − a(blank))², maps (rows, F, P), blank (1, F, P) → (rows, F).

    Subtracting the response to the probe's mean colour removes bias and DC, so only what the
    image's structure drives counts. Squared in place: one temporary the size of maps, not two.
    """
    return (maps - blank).square_().mean(-1)


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a batch, shaped (1, C, 1, ...) to broadcast over it."""
    flat = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    std = flat.std(dim=1) if flat.shape[1] > 1 else torch.zeros(x.shape[1], device=x.device)
    return flat.mean(dim=1).reshape(shape), std.reshape(shape)


def _blank_reference(combined: CombinedPass, x: torch.Tensor) -> None:
    """The BLANK reference: one image (1, C, *spatial) of the probe's per-channel mean."""
    mean, _ = _channel_stats(x)
    combined.reference(BLANK, mean.expand(1, *x.shape[1:]).contiguous())


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


def _needs_images(analysis: str, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{analysis}: needs 2-D images (N, C, H, W), got shape {tuple(x.shape)}")


def _orientation_plan(
    combined: CombinedPass, x: torch.Tensor, angles: int, frequencies: Sequence[float], phases: int
) -> Finish:
    _needs_images("orientation_tuning", x)
    angle_deg = torch.arange(angles, device=x.device, dtype=torch.float32) * (180.0 / angles)
    mean, std = _channel_stats(x)
    _blank_reference(combined, x)

    def energy(name: str, out: torch.Tensor, _first: int) -> torch.Tensor:
        return _driven_energy(out, combined.maps(BLANK)[name])

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
                "rotation_angles": _np(angle_deg),
                "tuning": _np(tuning),
                "tuning_frequency": _np(freqs[best.cpu()]),
                "osi": _np(osi),
                "preferred_orientation": _np(preferred),
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
    x = _prepare(model, x)
    return _run_alone(model, layers, max_batch_bytes, lambda c: _orientation_plan(c, x, angles, frequencies, phases))


def rotate_images(x: torch.Tensor, angle_deg: float, mean: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) rotated counter-clockwise (y up) by angle_deg; pixels from outside become `mean`."""
    h, w = x.shape[-2:]
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    # affine_grid maps output to input in normalised coords (y down); the aspect terms keep it a rotation.
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return mean + F.grid_sample(x - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotation_plan(combined: CombinedPass, x: torch.Tensor, angles: int) -> Finish:
    _needs_images("rotation_response", x)
    _, _, h, w = x.shape
    mean, _ = _channel_stats(x)
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
            e = _variant_means(e, angles).T  # (F, A)
            rel = e / e[:, :1].clamp_min(1e-30)
            result[name] = {"rotation_angles": np.asarray(angle_deg, dtype=np.float32), "rotation_response": _np(rel)}
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
    x = _prepare(model, x)
    return _run_alone(model, layers, max_batch_bytes, lambda c: _rotation_plan(c, x, angles))


# ---------------------------------------------------------------- sequences (1-D inputs)


def _sequence_plan(combined: CombinedPass, x: torch.Tensor, shifts: Sequence[float]) -> Finish:
    if x.dim() != 3:
        raise ValueError(f"sequence_symmetry: needs 1-D sequences (N, C, L), got shape {tuple(x.shape)}")
    n, length = x.shape[0], x.shape[-1]
    combined.reference(CLEAN, x)
    steps = [int(round(s * length)) for s in shifts]

    def follows(move: Callable[[torch.Tensor], torch.Tensor]) -> Reducer:
        """Cosine of a layer's map on the moved input with the same move applied to its clean map."""

        def compare(name: str, out: torch.Tensor, first: int) -> torch.Tensor:
            clean = combined.maps(CLEAN)[name][_image_index(first, len(out), n, out.device)]
            return _map_cosine(out, move(clean))

        return compare

    def rolled(step: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The input's roll as its map sees it: the same fraction of the map's own (maybe strided) length."""
        return lambda maps: torch.roll(maps, int(round(step * maps.shape[-1] / length)), dims=-1)

    for k, step in enumerate(steps):
        combined.add(f"shift/{k}", torch.roll(x, step, dims=-1), follows(rolled(step)))
    combined.add("reversal", torch.flip(x, dims=[-1]), follows(lambda m: torch.flip(m, dims=[-1])))

    def finish() -> Arrays:
        result: Arrays = {}
        for name in combined.layers:
            shift = torch.stack([combined.reduced(f"shift/{k}")[name].mean(0) for k in range(len(steps))])  # (S, F)
            result[name] = {
                "shift_fractions": np.asarray(shifts, dtype=np.float32),
                "shift": _np(shift.T),
                "reversal": _np(combined.reduced("reversal")[name].mean(0)),
            }
        return result

    return finish


def sequence_symmetry(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    shifts: Sequence[float] = DEFAULT_SHIFTS,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """For 1-D inputs (N, C, L): does each filter's map follow a circular shift or a time reversal of the input?

    "shift" (F, S): cosine of a(roll(x, s)) with roll(a(x), s·L_out/L) — 1 for a shift-equivariant
    filter, lower where padding or stride break it; shifts are fractions of L ("shift_fractions" (S,)).
    "reversal" (F,): cosine of a(flip(x)) with flip(a(x)) — 1 for a palindromic kernel, −1 for an
    antisymmetric one, near 0 for a direction-selective one. Cosines are averaged over images.
    """
    x = _prepare(model, x)
    return _run_alone(model, layers, max_batch_bytes, lambda c: _sequence_plan(c, x, shifts))


# ---------------------------------------------------------------- noise


def _noise_plan(combined: CombinedPass, x: torch.Tensor, sigmas: Sequence[float], seed: int) -> Finish:
    n = x.shape[0]
    _, std = _channel_stats(x)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    # Drawn in float32 whatever the model's dtype: a float64 model meets the same noise as float32.
    noise = torch.randn((len(sigmas),) + tuple(x.shape), generator=gen, device=x.device, dtype=torch.float32).to(x.dtype)
    scale = torch.tensor(list(sigmas), device=x.device, dtype=x.dtype).reshape(-1, *([1] * x.dim()))
    combined.reference(CLEAN, x)

    def compare(name: str, out: torch.Tensor, first: int) -> torch.Tensor:
        return _map_cosine(out, combined.maps(CLEAN)[name][_image_index(first, len(out), n, out.device)])

    combined.add("noise", (x.unsqueeze(0) + scale * std.unsqueeze(0) * noise).reshape(-1, *x.shape[1:]), compare)

    def finish() -> Arrays:
        return {
            name: {"noise_sigmas": np.asarray(sigmas, dtype=np.float32), "stability": _np(_variant_means(cos, len(sigmas)).T)}
            for name, cos in combined.reduced("noise").items()
        }

    return finish


def noise_stability(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    seed: int = 0,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """Cosine of each filter's map under Gaussian noise with its clean map, averaged over images.

    Noise std is σ × the probe's per-channel std; drawn from a local torch.Generator seeded with
    `seed` (deterministic, global RNG untouched). Uncentred cosine, so a filter that mostly passes
    the image's mean (a DC kernel) stays near 1. x: (N, C, *spatial).
    Keys: "noise_sigmas" (S,); "stability" (F, S).
    """
    x = _prepare(model, x)
    return _run_alone(model, layers, max_batch_bytes, lambda c: _noise_plan(c, x, sigmas, seed))


# ---------------------------------------------------------------- adversarial


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """model(x), checked to be class logits (N, classes), which attacks and impact need."""
    logits = model(x)
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
    _, std = _channel_stats(x)
    radius = epsilon * std
    grad, y = _input_gradient(model, x, y)
    x_fgsm = x + radius * grad.sign()
    x_pgd = x.clone()
    step = 2.5 * radius / max(pgd_steps, 1)
    for _ in range(pgd_steps):
        x_pgd = x_pgd + step * _input_gradient(model, x_pgd, y)[0].sign()
        x_pgd = x + torch.maximum(torch.minimum(x_pgd - x, radius), -radius)
    return x_fgsm, x_pgd


def _adversarial_plan(
    combined: CombinedPass, x: torch.Tensor, y: Optional[torch.Tensor], epsilon: float, pgd_steps: int
) -> Finish:
    n = x.shape[0]
    x_fgsm, x_pgd = adversarial_inputs(combined.model, x, y, epsilon, pgd_steps)
    combined.reference(CLEAN, x)

    def squared_change(name: str, out: torch.Tensor, first: int) -> torch.Tensor:
        clean = combined.maps(CLEAN)[name][_image_index(first, len(out), n, out.device)]
        return ((out - clean) ** 2).sum(-1)

    combined.add("fgsm", x_fgsm, squared_change)
    combined.add("pgd", x_pgd, squared_change)

    def finish() -> Arrays:
        result: Arrays = {}
        for name in combined.layers:
            clean_norm = combined.maps(CLEAN)[name].transpose(0, 1).flatten(1).norm(dim=1).clamp_min(1e-30)
            result[name] = {"adv_epsilon": np.asarray(epsilon, dtype=np.float32)}
            for attack in ("fgsm", "pgd"):
                result[name][attack] = _np(combined.reduced(attack)[name].sum(0).sqrt() / clean_norm)
        return result

    return finish


def adversarial_change(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: Optional[torch.Tensor] = None,
    *,
    epsilon: float = 0.1,
    pgd_steps: int = 3,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """Relative activation change per filter under FGSM and an L∞ PGD attack (see `adversarial_inputs`).

    Change is ‖Δa‖/‖a‖ over all images and positions. y: labels (N,); None attacks the model's
    own predictions. Keys: "adv_epsilon" () ; "fgsm" (F,); "pgd" (F,).
    """
    x = _prepare(model, x)
    return _run_alone(model, layers, max_batch_bytes, lambda c: _adversarial_plan(c, x, y, epsilon, pgd_steps))


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


def _counterfactual_plan(combined: CombinedPass, x: torch.Tensor, counterfactuals: Mapping[str, Counterfactual]) -> Finish:
    n = x.shape[0]
    combined.reference(CLEAN, x)

    def mean_abs_and_cosine(name: str, out: torch.Tensor, first: int) -> torch.Tensor:
        clean = combined.maps(CLEAN)[name][_image_index(first, len(out), n, out.device)]
        return torch.stack([out.abs().mean(-1), _map_cosine(out, clean)], dim=1)  # (rows, 2, F)

    for cf_name, edit in counterfactuals.items():
        with torch.no_grad():
            edited = edit(x.clone())
        if not isinstance(edited, torch.Tensor) or edited.shape != x.shape:
            raise ValueError(f"counterfactual {cf_name!r} must return a tensor shaped {tuple(x.shape)}")
        combined.add(f"cf/{cf_name}", edited, mean_abs_and_cosine)

    def finish() -> Arrays:
        result: Arrays = {name: {} for name in combined.layers}
        for name in combined.layers:
            before = combined.maps(CLEAN)[name].abs().mean(dim=(0, 2))
            for cf_name in counterfactuals:
                key = f"cf/{cf_name}"
                after, cosine = combined.reduced(key)[name].mean(0)
                change = (after - before) / before.clamp_min(1e-30)
                z = robust_z(change.abs())
                result[name][key] = _np(change)
                result[name][key + "/cosine"] = _np(cosine)
                result[name][key + "/z"] = _np(z)
                result[name][key + "/flag"] = _np((z > ROBUST_Z_FLAG) & (change.abs() >= MIN_CHANGE))
        return result

    return finish


def counterfactual_sensitivity(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    counterfactuals: Mapping[str, Counterfactual],
    *,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """How each filter changes when the user's edit(batch) → batch is applied to the probe.

    Per counterfactual `c`: "cf/<c>" (F,) signed relative change of mean |activation|
    ((after − before)/before); "cf/<c>/cosine" (F,) cosine of maps, averaged over images;
    "cf/<c>/z" (F,) robust z-score of |cf/<c>| within the layer; "cf/<c>/flag" (F,) bool, z > 3.5
    and |cf/<c>| ≥ 0.05: the filter reacts far more than the layer's others, i.e. it detects what
    the edit removes.
    """
    x = _prepare(model, x)
    return _run_alone(model, layers, max_batch_bytes, lambda c: _counterfactual_plan(c, x, counterfactuals))


# ---------------------------------------------------------------- shape vs texture (2-D inputs)


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


def _rms_change(energy: torch.Tensor, clean_energy: torch.Tensor) -> torch.Tensor:
    """|r − r₀| / max(r, r₀) of the RMS responses r = √energy (F,): in [0, 1], 0 when both are 0."""
    r, r0 = energy.sqrt(), clean_energy.sqrt()
    top = torch.maximum(r, r0)
    return torch.where(top > 0, (r - r0).abs() / top.clamp_min(1e-30), torch.zeros_like(top))


def shape_texture_index(shape: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
    """(shape − texture) / max(shape + texture, MIN_CHANGE) per filter (F,) → (F,) in [−1, 1].

    +1: only shape moves the filter, −1: only texture. The floor keeps a filter that neither
    transform moves (both sensitivities ~0, where the plain ratio is noise over noise) near 0.
    """
    return (shape - texture) / (shape + texture).clamp_min(MIN_CHANGE)


def _shape_texture_plan(
    combined: CombinedPass, x: torch.Tensor, patch_size: Optional[int], blur_sigma: Optional[float], seed: int
) -> Finish:
    _needs_images("shape_texture_sensitivity", x)
    side = min(x.shape[-2:])
    patch_size = max(1, side // 4) if patch_size is None else patch_size
    blur_sigma = side / 32 if blur_sigma is None else blur_sigma
    shuffled = shuffle_patches(x, patch_size, torch.Generator().manual_seed(seed))
    blurred = gaussian_blur(x, blur_sigma)
    combined.reference(CLEAN, x)
    _blank_reference(combined, x)

    def energy(name: str, out: torch.Tensor, _first: int) -> torch.Tensor:
        return _driven_energy(out, combined.maps(BLANK)[name])

    combined.add("st/shuffled", shuffled, energy)
    combined.add("st/blurred", blurred, energy)

    def finish() -> Arrays:
        result: Arrays = {}
        for name in combined.layers:
            clean = _driven_energy(combined.maps(CLEAN)[name], combined.maps(BLANK)[name]).mean(0)
            shape = _rms_change(combined.reduced("st/shuffled")[name].mean(0), clean)
            texture = _rms_change(combined.reduced("st/blurred")[name].mean(0), clean)
            result[name] = {
                "st/shape_sensitivity": _np(shape),
                "st/texture_sensitivity": _np(texture),
                "st/index": _np(shape_texture_index(shape, texture)),
            }
        return result

    return finish


def shape_texture_sensitivity(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    patch_size: Optional[int] = None,
    blur_sigma: Optional[float] = None,
    seed: int = 0,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """Does each filter use the probe's global shape or its local texture? Two counterfactuals say.

    Patch shuffling (`shuffle_patches`, patch_size default ¼ of the shorter side, seeded by `seed`)
    keeps texture and destroys shape; a Gaussian blur (`gaussian_blur`, blur_sigma default 1/32 of
    the shorter side, in pixels) keeps shape and removes texture. A filter's response is its RMS
    driven response over images and positions (a − a(blank), as for orientation, so bias and DC
    do not count; position-free, since shuffling moves everything). x: (N, C, H, W).

    Keys, each (F,): "st/shape_sensitivity" = |r_shuffled − r| / max(r_shuffled, r) in [0, 1];
    "st/texture_sensitivity" the same under blur; "st/index" = `shape_texture_index` in [−1, 1]
    (+1 shape only, −1 texture only, ~0 for neither or both). No histogram is stored: a layer's
    distribution of the index is summarised on read.
    """
    x = _prepare(model, x)
    return _run_alone(model, layers, max_batch_bytes, lambda c: _shape_texture_plan(c, x, patch_size, blur_sigma, seed))


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
    shape_texture: bool = False,
    patch_size: Optional[int] = None,
    blur_sigma: Optional[float] = None,
    seed: int = 0,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    share: Optional[RowShare] = None,
) -> Optional[Arrays]:
    """The cheap default set, merged per layer: orientation (2-D inputs) or shift/reversal (1-D),
    noise stability, FGSM/PGD change, the given counterfactuals, and on request (`shape_texture=True`,
    2-D inputs; `patch_size`, `blur_sigma` as in shape_texture_sensitivity) the shape–texture
    sensitivities, all in one CombinedPass.

    Cheap because it runs every logged epoch: gratings in two quadrature phases (the energy of a
    linear filter over a quadrature pair does not depend on phase), the rotated-probe curve only
    on request (`rotate_probe=True`), since the grating curve already gives the tuning, and every
    variant in the same few passes (`max_batch_bytes`, see CombinedPass).

    x: (N, C, *spatial); y: labels (N,) or None (attacks then use the model's predictions).
    Orientation needs gratings, so 3-D inputs get none (a warning says so); shape–texture needs
    images, so other inputs skip it with a warning. The adversarial pair is skipped with a warning
    when the model does not return (N, classes) logits.
    Keys: see orientation_tuning, rotation_response, sequence_symmetry, noise_stability,
    adversarial_change, counterfactual_sensitivity and shape_texture_sensitivity; the same values
    as each run alone. With `share` (several processes, see CombinedPass.run) only the assembling
    process gets the result; the others return None.
    """
    x = _prepare(model, x)
    combined = CombinedPass(model, layers, max_batch_bytes)
    finishes: list[Finish] = []
    if x.dim() == 4:
        finishes.append(_orientation_plan(combined, x, angles, DEFAULT_FREQUENCIES, phases))
        if rotate_probe:
            finishes.append(_rotation_plan(combined, x, angles))
    elif x.dim() == 3:
        finishes.append(_sequence_plan(combined, x, DEFAULT_SHIFTS))
    else:
        notice(f"perturbation_responses: no orientation analysis for {x.dim() - 2}-D inputs")
    if shape_texture and x.dim() == 4:
        finishes.append(_shape_texture_plan(combined, x, patch_size, blur_sigma, seed))
    elif shape_texture:
        notice(f"perturbation_responses: shape_texture needs 2-D images, skipped for {x.dim() - 2}-D inputs")
    finishes.append(_noise_plan(combined, x, noise_sigmas, seed))
    try:
        finishes.append(_adversarial_plan(combined, x, y, epsilon, pgd_steps))
    except ValueError as err:
        notice(f"perturbation_responses: adversarial analysis skipped: {err}")
    if counterfactuals:
        finishes.append(_counterfactual_plan(combined, x, counterfactuals))
    if not combined.run(share):
        return None
    parts = [finish() for finish in finishes]
    return {name: {k: v for part in parts for k, v in part[name].items()} for name in layers}
