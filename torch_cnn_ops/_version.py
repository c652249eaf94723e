"""The package's version, in one place: pyproject.toml reads it (``[tool.setuptools.dynamic]``)
and ``torch_cnn_ops.__version__`` is it. CHANGELOG.md says what each version changed."""

__version__ = "0.3.0"
