"""Every route parameter is parsed and checked here, once, against what the logs hold.

Errors are TensorBoard's own (`errors.InvalidArgumentError` → 400, `errors.NotFoundError` → 404),
as its built-in plugins raise them; the plugin answers them as JSON.
"""
from __future__ import annotations

from typing import Optional

from werkzeug.datastructures import MultiDict

from tb_convviz.schema import format as fmt
from tensorboard import errors

from tb_convviz.read.reader import ConvVizReader


class RequestParams:
    """Typed access to one request's query string; errors name the parameter."""

    def __init__(self, args: MultiDict, reader: ConvVizReader):
        self._args = args
        self._reader = reader

    def text(self, name: str) -> str:
        value = self._args.get(name)
        if value is None or value == "":
            raise errors.InvalidArgumentError(f"missing parameter {name!r}")
        return value

    def integer(self, name: str, default: Optional[int] = None) -> int:
        raw = self._args.get(name)
        if raw is None or raw == "":
            if default is not None:
                return default
            raise errors.InvalidArgumentError(f"missing parameter {name!r}")
        try:
            return int(raw)
        except ValueError:
            raise errors.InvalidArgumentError(f"parameter {name!r} must be an integer, got {raw!r}") from None

    def optional_integer(self, name: str) -> Optional[int]:
        """An integer parameter that may be left out (None): the route picks its own default."""
        raw = self._args.get(name)
        return None if raw is None or raw == "" else self.integer(name)

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        value = self._args.get(name) or options[0]
        if value not in options:
            raise errors.InvalidArgumentError(f"parameter {name!r} must be one of {list(options)}, got {value!r}")
        return value

    def run(self, name: str = "run") -> str:
        run = self.text(name)
        if run not in self._reader.runs():
            raise errors.NotFoundError(f"no convviz data for run {run!r}")
        return run

    def layer(self, run: str, name: str = "layer") -> str:
        layer = self.text(name)
        if layer == fmt.RUN_LAYER or layer not in self._reader.layers(run):
            raise errors.NotFoundError(f"run {run!r} has no conv layer {layer!r}")
        return layer

    def kind(self, run: str, layer: str, kind: str) -> str:
        """`kind`, when the layer has records of it (else 404: the analysis was off for the run)."""
        if kind not in self._reader.kinds(run, layer):
            raise errors.NotFoundError(f"layer {layer!r} of run {run!r} has no {kind!r} records (see ConvViz options)")
        return kind

    def step(self, run: str, layer: str, name: str = "step", kind: str = fmt.KIND_FILTERS) -> int:
        step = self.integer(name)
        self.kind(run, layer, kind)
        if step not in self._reader.steps(run, layer, kind):
            raise errors.NotFoundError(f"layer {layer!r} of run {run!r} has no {kind!r} record at step {step}")
        return step

    def run_step(self, run: str, name: str = "step") -> Optional[int]:
        """A step the run logged (every layer logs its filters each step), or None when left out."""
        step = self.optional_integer(name)
        if step is not None:
            self.step(run, self._reader.layers(run)[0], name)
        return step

    def filter(self, filters: int, name: str = "filter") -> int:
        index = self.integer(name)
        if not 0 <= index < filters:
            raise errors.InvalidArgumentError(f"parameter {name!r} must be in [0, {filters}), got {index}")
        return index
