"""PyTorch Lightning adapter; import it only where `lightning` (or `pytorch_lightning`) is installed."""
from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package name, older installs
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError as e:
        raise ImportError(
            "tb_convviz.lightning needs PyTorch Lightning: pip install 'tb_convviz[lightning]'"
        ) from e

from tb_convviz.write.callback import ConvViz


class ConvVizCallback(Callback):
    """`Trainer(callbacks=[ConvVizCallback(logger.experiment, probe=...)])`: logs at each epoch end.

    Takes the same arguments as `ConvViz` (validated here, at construction); the last epoch of
    `fit` is logged with ``final=True`` so it keeps full kernels.
    """

    def __init__(self, log_dir_or_summary_writer: Any, **convviz_args: Any):
        super().__init__()
        self.viz = ConvViz(log_dir_or_summary_writer, **convviz_args)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # Every rank logs: under DDP the ranks share the exact ablation and rank 0 alone writes
        # (ConvViz's first log sets up a process group every rank must join).
        if trainer.sanity_checking:
            return
        last = trainer.should_stop or (
            trainer.max_epochs is not None and trainer.max_epochs >= 0 and trainer.current_epoch + 1 >= trainer.max_epochs
        )
        self.viz.log(pl_module, trainer.current_epoch, final=last)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.viz.close()
