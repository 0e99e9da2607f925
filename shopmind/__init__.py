"""shopmind: a self-hosted, privacy-first AI engine for e-commerce."""

from shopmind.config import Settings, load_settings
from shopmind.exceptions import ShopmindError
from shopmind.shop import Shop

__version__ = "0.1.0"
__all__ = ["Settings", "Shop", "ShopmindError", "__version__", "load_settings"]
