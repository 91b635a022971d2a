"""The `tb-convviz` command: log saved checkpoints, export to the projector."""
