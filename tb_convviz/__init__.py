"""tb_convviz: log what every conv filter learned and browse it in TensorBoard."""
from tb_convviz._version import __version__
from tb_convviz.write.callback import ConvViz
from tb_convviz.write.metrics import FilterMetric, MetricContext
from tb_convviz.read.reader import Logs, NotFound, load

__all__ = ["ConvViz", "FilterMetric", "Logs", "MetricContext", "NotFound", "__version__", "load"]
