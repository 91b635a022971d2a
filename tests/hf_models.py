"""A tiny randomly initialised ResNet from `transformers` (built from its config: no download),
trained by a real `Trainer` on grey images, for tests/test_hf.py and tests/hf_ddp_job.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

EPOCHS = 2
IMAGES, SIZE = 32, 12


class Images(torch.utils.data.Dataset):
    """Grey SIZE×SIZE images labelled by whether their mean is positive: the keys the Trainer feeds a ResNet."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(IMAGES, 1, SIZE, SIZE, generator=g)
        self.y = (self.x.mean(dim=(1, 2, 3)) > 0).long()

    def __len__(self) -> int:
        return IMAGES

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def train(output_dir: Path, callback: Optional[Any], report_to: tuple[str, ...] = ("tensorboard",)) -> dict[str, torch.Tensor]:
    """Train a randomly initialised tiny ResNet for EPOCHS epochs, scalars to `report_to`; its final weights."""
    from transformers import ResNetConfig, ResNetForImageClassification, Trainer, TrainingArguments

    config = ResNetConfig(num_channels=1, embedding_size=4, hidden_sizes=[4, 8], depths=[1, 1], layer_type="basic", num_labels=2)
    torch.manual_seed(0)
    model = ResNetForImageClassification(config)
    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=EPOCHS, per_device_train_batch_size=8, learning_rate=0.05,
        report_to=list(report_to), logging_strategy="epoch", save_strategy="no", use_cpu=True, seed=0,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Images(), callbacks=[callback] if callback else None)
    trainer.train()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
