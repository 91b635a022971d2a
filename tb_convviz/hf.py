"""Hugging Face `transformers.Trainer` adapter; import it only where `transformers` is installed.

`Trainer(..., callbacks=[ConvVizCallback(probe=(x, y))])` logs at each epoch end into the
Trainer's own TensorBoard run folder, so the CONVVIZ tab sits beside the Trainer's scalars.
"""
from __future__ import annotations

import inspect
import math
import os
from typing import Any, Optional

try:
    from transformers import TrainerCallback
    from transformers.integrations import TensorBoardCallback
    from transformers.integrations.integration_utils import default_logdir
    from transformers.modeling_utils import unwrap_model
    from transformers.trainer_callback import CallbackHandler
except ImportError as e:
    raise ImportError("tb_convviz.hf needs transformers: pip install 'tb_convviz[hf]'") from e

from tb_convviz.write.callback import ConvViz

# How far up the stack the Trainer's CallbackHandler is looked for: past `trainer_run` and our event
# method to the handler's `call_event`.
_HANDLER_FRAMES = 4


class ConvVizCallback(TrainerCallback):
    """`Trainer(callbacks=[ConvVizCallback(probe=(x, y), **convviz_options)])`: logs at each epoch end.

    Takes `ConvViz`'s arguments but the log folder (checked here, at construction). Each epoch
    end is one log at step = the epoch's index (0, 1, …), whatever the evaluation strategy:
    `every_n_epochs` and `kernels_every` count epochs, as with the Lightning adapter; the last
    epoch of `train()` is logged with ``final=True`` so it keeps full kernels. Evaluation does
    not log: with ``eval_strategy="epoch"`` it would log each epoch twice.

    The records go into the Trainer's TensorBoard run folder: with ``report_to="tensorboard"``
    into the event file of the Trainer's own writer, else into the folder that writer would use.
    Under a distributed launch every rank's callback takes part, as `ConvViz` does under DDP:
    the ranks share the analysis, and the first process alone writes. `train()` closes it at the end.
    """

    def __init__(self, **convviz_options: Any):
        super().__init__()
        if "log_dir_or_summary_writer" in convviz_options:
            raise ValueError("log_dir_or_summary_writer: the Trainer's run folder is used; pass only ConvViz's other options")
        try:
            inspect.signature(ConvViz).bind(None, **convviz_options)
        except TypeError as e:
            raise ValueError(f"ConvVizCallback: {e}") from None
        self._options = convviz_options
        self.viz: Optional[ConvViz] = ConvViz(None, **convviz_options)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.viz is None:  # an earlier train() closed it: this one is a run of its own
            self.viz = ConvViz(None, **self._options)
        # A rank that never writes still needs a folder: the output dir, which the Trainer uses anyway.
        self.viz.write_to(trainer_run(args) if state.is_world_process_zero else args.output_dir)

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        assert self.viz is not None
        # state.epoch is the epochs done (fractional when max_steps ends one early).
        epoch = math.ceil(round(state.epoch, 6)) - 1
        final = bool(control.should_training_stop) or state.global_step >= state.max_steps
        self.viz.log(unwrap_model(model), epoch, final=final)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.viz is not None:
            self.viz.close()
            self.viz = None


def trainer_run(args: Any) -> Any:
    """Where the Trainer's TensorBoard scalars go: its TensorBoardCallback's SummaryWriter (shared,
    so both loaders read one event file), else the folder it would name.

    transformers hands a callback neither the Trainer nor its other callbacks, so the handler that
    dispatches this event is found on the stack; it runs the TensorBoardCallback's
    `on_train_begin` (which opens its writer on the first process) before the callbacks a user adds.
    """
    handler = _calling_handler()
    for callback in handler.callbacks if handler is not None else ():
        if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
            return callback.tb_writer
    # What TensorBoardCallback would name: its environment variable, `logging_dir` (transformers 4),
    # else a fresh runs/<date>_<host> under the output dir.
    named = os.getenv("TENSORBOARD_LOGGING_DIR") or getattr(args, "logging_dir", None)
    return os.path.expanduser(named) if named else os.path.join(args.output_dir, default_logdir())


def _calling_handler() -> Optional[CallbackHandler]:
    """The CallbackHandler whose `call_event` runs the event that called our caller, if any."""
    frame = inspect.currentframe()
    try:
        for _ in range(_HANDLER_FRAMES):
            frame = frame.f_back if frame is not None else None
            owner = frame.f_locals.get("self") if frame is not None else None
            if isinstance(owner, CallbackHandler):
                return owner
        return None
    finally:
        del frame  # a frame held in a local keeps its callers alive: drop it
