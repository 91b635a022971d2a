"""Entry point TensorBoard finds through the `tensorboard_plugins` entry-point group."""
from __future__ import annotations

from tensorboard.plugins import base_plugin

from tb_convviz.schema import format as fmt


class ConvVizLoader(base_plugin.TBLoader):
    """Loads the CONVVIZ plugin, and makes TensorBoard keep every logged epoch of it.

    TensorBoard keeps a reservoir sample of 10 steps per tag for a plugin it does not know;
    a user comparing epoch 3 with epoch 27 needs them all, without having to find a flag.
    An explicit `--samples_per_plugin=convviz=N` from the user still wins.
    """

    def fix_flags(self, flags) -> None:
        samples = getattr(flags, "samples_per_plugin", None)
        if samples is None:
            return
        if isinstance(samples, str):  # flags built by hand rather than by TensorBoard's parser
            from tensorboard.plugins.core.core_plugin import _parse_samples_per_plugin

            samples = flags.samples_per_plugin = _parse_samples_per_plugin(samples)
        samples.setdefault(fmt.PLUGIN_NAME, 0)  # 0 keeps all steps

    def load(self, context: base_plugin.TBContext) -> base_plugin.TBPlugin:
        from tb_convviz.plugin.plugin import ConvVizPlugin

        return ConvVizPlugin(context)
