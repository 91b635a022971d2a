"""The package's version, in one place: setup.py reads this file as text (importing the package
would import torch), the writer stamps it on every record and the plugin's `/index` answers it."""
__version__ = "0.2.0"  # 0.2: log format 2 (`schema.groups`)
