"""``python -m tb_convviz``: the ``tb-convviz`` command."""
import sys

from tb_convviz.cli.command import main

sys.exit(main())
