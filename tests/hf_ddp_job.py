"""A real `transformers.Trainer` under `torchrun` on CPU (gloo), for tests/test_hf.py: every rank
trains the tiny ResNet with the ConvVizCallback, as a user launches it.

    python -m torch.distributed.run --nproc_per_node 2 tests/hf_ddp_job.py OUTPUT_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from hf_models import Images, train  # noqa: E402

from tb_convviz.hf import ConvVizCallback  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    data = Images()
    train(Path(sys.argv[1]), ConvVizCallback(probe=(data.x, data.y), impact=True))
