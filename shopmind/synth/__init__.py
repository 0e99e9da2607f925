"""Deterministic synthetic shop data for demos, tests and benchmarks.

>>> from pathlib import Path
>>> from shopmind.synth import generate_shop, write_shop
>>> shop = generate_shop(n_users=1_000, days=30, seed=7)
>>> paths = write_shop(shop, Path("demo-data"), fmt="parquet")

For very large shops, ``stream_shop(directory, config)`` writes the same tables chunk by
chunk without holding all events in memory.
"""

from shopmind.synth.generator import ShopConfig, SyntheticShop, generate_shop
from shopmind.synth.io import stream_shop, write_shop
from shopmind.synth.vocab import TOP_CATEGORIES

__all__ = ["TOP_CATEGORIES", "ShopConfig", "SyntheticShop", "generate_shop", "stream_shop", "write_shop"]
