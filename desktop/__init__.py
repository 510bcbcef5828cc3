"""Olmo Desktop: the Qt (PySide6) GUI. All model work lives in the Qt-free ``olmo3`` package."""

__all__ = ["__version__"]
__version__ = "0.1.0"
