"""A real Lightning `Trainer(strategy="ddp")` on CPU with 2 processes and the ConvViz callback, for
tests/test_lightning.py. Lightning starts the second rank by running this script again.

    python tests/lightning_ddp_job.py LOGDIR
"""
from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch
from torch import nn

from tb_convviz.lightning import ConvVizCallback

EPOCHS = 2


class Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 2
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    callback = ConvVizCallback(sys.argv[1], probe=(x[:6], y[:6]), impact=True)
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=2, strategy="ddp", callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Net(), loader)


if __name__ == "__main__":
    main()
