"""The Lightning adapter: a real Trainer logs every epoch, the last one with full kernels."""
import subprocess
import sys

import pytest
import torch
from torch import nn

from tb_convviz import load


def test_core_import_does_not_pull_lightning():
    code = "import sys, tb_convviz; assert not any(m.startswith(('lightning', 'pytorch_lightning')) for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_trainer_logs_each_epoch(tmp_path):
    pl = pytest.importorskip("lightning.pytorch", reason="lightning is not installed (pip install 'tb_convviz[lightning]')")
    from tb_convviz.lightning import ConvVizCallback

    class Net(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))

        def forward(self, x):
            return self.body(x)

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

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
