"""tb_convviz: see what every conv filter learned, right in TensorBoard."""
import re
from pathlib import Path

from setuptools import setup

# The version lives in tb_convviz/_version.py alone; read as text, since importing the package imports torch.
VERSION = re.search(r'__version__ = "([^"]+)"', Path(__file__).with_name("tb_convviz").joinpath("_version.py").read_text()).group(1)

setup(
    name="tb_convviz",
    version=VERSION,
    description="PyTorch callback + TensorBoard plugin that shows what every conv filter learned",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=[
        "tb_convviz",
        "tb_convviz.analysis",
        "tb_convviz.cli",
        "tb_convviz.read",
        "tb_convviz.model",
        "tb_convviz.write",
        "tb_convviz.schema",
        "tb_convviz.analysis.ablation_replay",
        "tb_convviz.analysis.perturbation",
        "tb_convviz.plugin",
        "tb_convviz.frontend",
    ],
    # The dashboard's ES modules live at the top level (frontend/) and ship inside the wheel,
    # so a non-editable install serves them.
    package_dir={"tb_convviz.frontend": "frontend"},
    package_data={"tb_convviz.frontend": ["*.js", "*.css", "*.json", "views/*.js"]},
    install_requires=[
        "torch>=2.1",
        "tensorboard>=2.14",
        "numpy",
        "protobuf",
        "werkzeug",
        "crc32c",  # C checksums for event files: TensorBoard's pure-Python ones cost 0.35 s/MB
        "scipy",  # optimal one-to-one filter matching across runs (linear_sum_assignment)
        "tqdm",  # log-checkpoints: a progress bar with an ETA, the one every ML user knows
    ],
    extras_require={
        # moto[server] and gcp-storage-emulator: real S3- and GCS-protocol servers on loopback for the
        # object-store tests (the emulator is pure Python; its floor is the release they were written
        # against, whose on-disk store keeps a bucket's objects across the restart a test makes).
        "test": ["pytest", "playwright", "scikit-learn", "mnist1d", "lightning", "transformers[torch]>=4.40", "build",
                 "fsspec>=2023.12", "s3fs>=2023.12", "boto3", "moto[server]",
                 "gcsfs>=2023.12", "gcp-storage-emulator>=2026.7.19,<2027"],
        # Logdirs in object storage (tb_convviz/storage.py): fsspec with s3fs or gcsfs for the writer,
        # load() and the plugin's reads; boto3 for TensorBoard's own S3 reader (`tensorboard --logdir s3://…`).
        # s3fs pins the botocore its aiobotocore supports: without a floor, pip meets a newer boto3
        # by falling back to s3fs 0.4 (2020), whose session no longer takes endpoint_url.
        "s3": ["fsspec>=2023.12", "s3fs>=2023.12", "boto3"],
        "gcs": ["fsspec>=2023.12", "gcsfs>=2023.12"],
        "lightning": ["lightning"],
        # tb_convviz.hf: the Trainer needs accelerate, which transformers' torch extra brings.
        "hf": ["transformers[torch]>=4.40"],
        "demo": ["scikit-learn", "mnist1d"],
        # bench/impact.py compares exact ablation with Captum's LayerFeatureAblation.
        # bench/feature_vis.py compares with Lucent's render_vis. torch-lucent itself is installed with
        # --no-deps (its torchvision requirement would bring a CUDA build, and its kornia pin an old
        # kornia); these are what its render path imports (the script stubs torchvision's Normalize).
        "bench": ["captum", "psutil", "kornia", "decorator", "tqdm", "pillow"],
        # Non-linear filter maps (analysis/embedding.py); PCA needs neither.
        "embed": ["umap-learn", "scikit-learn"],
    },
    entry_points={
        "console_scripts": ["tb-convviz = tb_convviz.cli.command:main"],
        "tensorboard_plugins": [
            "convviz = tb_convviz.plugin.loader:ConvVizLoader",
        ],
    },
)
