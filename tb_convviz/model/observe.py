"""Looking at a model without changing how it trains."""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch
from torch import nn


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode for analysis, then restore everything training depends on.

    Restored on exit, even after an exception: every module's train/eval flag, each parameter's
    requires_grad and .grad, every buffer (BatchNorm running stats, num_batches_tracked), the
    torch (CPU and CUDA), numpy and Python RNG states, and the grad-enabled mode.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    np_rng = np.random.get_state()
    py_rng = random.getstate()
    grad_mode = torch.is_grad_enabled()
    try:
        model.eval()
        yield model
    finally:
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for p, requires_grad, grad in params:
                p.requires_grad_(requires_grad)
                p.grad = grad
            for b, saved in buffers:
                if not torch.equal(b, saved):
                    b.copy_(saved)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)
        torch.set_grad_enabled(grad_mode)
