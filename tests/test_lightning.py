"""The Lightning adapter: a real Trainer logs every epoch, the last one with full kernels, alone
and under DDP."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tb_convviz import load


def test_core_import_does_not_pull_lightning():
    code = "import sys, tb_convviz; assert not any(m.startswith(('lightning', 'pytorch_lightning')) for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_trainer_logs_each_epoch(tmp_path):
    pl = pytest.importorskip("lightning.pytorch", reason="lightning is not installed (pip install 'tb_convviz[lightning]')")
    from lightning_ddp_job import Net  # the same small LightningModule the DDP job trains
    from tb_convviz.lightning import ConvVizCallback

    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 2, (16,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    with pytest.raises(ValueError, match="every_n_epochs"):
        ConvVizCallback(tmp_path, every_n_epochs=0)
    callback = ConvVizCallback(tmp_path / "run", probe=(x[:4], y[:4]), kernels_every=100)
    trainer = pl.Trainer(max_epochs=3, callbacks=[callback], logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Net(), loader)
    logs = load(tmp_path)
    assert logs.steps("run", "body.0") == [0, 1, 2]
    assert logs.steps("run", "body.0", "kernels") == [0, 1, 2]  # small layer: every epoch


def test_ddp_trainer_logs_with_every_rank_taking_part(tmp_path):
    """Under Lightning's DDP every rank calls log() (ConvViz's first log sets up a process group all
    ranks join; a callback that let only rank 0 log waited there for good): one event file, every
    epoch, the exact ablation shared by both ranks."""
    pytest.importorskip("lightning.pytorch", reason="lightning is not installed (pip install 'tb_convviz[lightning]')")
    from lightning_ddp_job import EPOCHS

    job = Path(__file__).parent / "lightning_ddp_job.py"
    subprocess.run([sys.executable, str(job), str(tmp_path / "run")], check=True, timeout=400, cwd=tmp_path,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1
    logs = load(tmp_path)
    for layer in ("body.0", "body.2"):
        assert logs.steps("run", layer) == logs.steps("run", layer, "impact") == list(range(EPOCHS))
    assert logs.impact("run", "body.2", EPOCHS - 1)["ablated_by_rank"].tolist() == [4, 4]
