"""The package's version, in one place: setup.py reads this file as text (importing the package
would import torch), the writer stamps it on every record and the plugin's `/index` answers it."""
__version__ = "0.1.0"
