"""One forward pass that records (or edits) the outputs of chosen modules."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn

OutputEdit = Callable[[str, torch.Tensor], Optional[torch.Tensor]]


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live, so probes can follow them."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def as_model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`x` on the model's device and in its floating dtype: the probe follows the model."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return x.to(model_device(model), dtype)


def class_scores(out: Any) -> Any:
    """A model's output as the analyses read it: a Hugging Face `ModelOutput`'s `logits` (its
    classifiers return the class scores beside a loss and hidden states); anything else as it is."""
    logits = getattr(out, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else out


def run_with_hooks(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    record: bool = True,
    edit: Optional[OutputEdit] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run `model(x)` once with forward hooks on `modules`; hooks are always removed.

    `edit(name, output)` may return a replacement output (used for ablation); `record`
    keeps a detached copy of each module's (possibly edited) output. Returns (model output, as
    `class_scores`, {name: output}). The forward follows the caller's grad mode, so analyses that need
    gradients read the live outputs inside `edit` instead.
    """
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs, out: torch.Tensor):
            if edit is not None:
                replaced = edit(name, out)
                if replaced is not None:
                    out = replaced
            if record:
                # A copy: an in-place op downstream (ReLU(inplace=True)) would rewrite the tensor.
                outputs[name] = out.detach().clone()
            return out

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        y = class_scores(model(as_model_input(model, x)))
    finally:
        for h in handles:
            h.remove()
    return y, outputs
