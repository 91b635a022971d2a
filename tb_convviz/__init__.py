"""tb_convviz: log what every conv filter learned and browse it in TensorBoard."""
