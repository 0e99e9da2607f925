"""shopmind: a self-hosted, privacy-first AI engine for e-commerce.

Names are imported on first use, so light modules (shopmind.evaluation, shopmind.synth) can be used
without loading the service stack (a peer's virtualenv imports the evaluator alone).
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Settings", "Shop", "ShopmindError", "__version__", "load_settings"]

if TYPE_CHECKING:  # pragma: no cover
    from shopmind.config import Settings, load_settings
    from shopmind.exceptions import ShopmindError
    from shopmind.shop import Shop

_WHERE = {"Settings": "shopmind.config", "load_settings": "shopmind.config",
          "ShopmindError": "shopmind.exceptions", "Shop": "shopmind.shop"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'shopmind' has no attribute {name!r}")
