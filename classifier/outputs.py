"""Backbone outputs at the precision they are kept at: float16.

A photo's backbone outputs (pooled embedding (1280,) and ImageNet logits (1000,)) are cached so
that a later head of the same backbone scores it without decoding it again. Head-only
reclassification reads them back by the hundred thousand, so their size is its cost: as float32
(9,120 bytes a photo) PostgreSQL stored them out of line (TOAST), fetching and decompressing
several pieces per photo; as float16 (4,560 bytes) a row fits in a page and is read in place
(docs/BENCHMARKS.md, "Head-only: where the time goes").

float16 keeps 11 significant bits, a relative error of at most 2⁻¹¹ (0.05 %), far below the int8
backbone's own quantization steps (1/255 of each activation's range), and both ranges fit
(embeddings are ReLU6 features in [0, 6], logits a few tens at most; float16 reaches 65,504).
So that a photo scored now and the same photo scored later from its cached outputs get the same
figures, the classifier rounds outputs to this precision before it scores them.
"""

from __future__ import annotations

import numpy as np

#: The element type outputs are kept at: float16, little-endian.
STORED_DTYPE = np.dtype("<f2")
#: float16's largest finite value; outputs beyond it (never seen from this backbone) are clipped
#: to it rather than becoming infinite, so every photo still gets finite scores.
STORED_MAX = float(np.finfo(np.float16).max)


def at_stored_precision(values: np.ndarray) -> np.ndarray:
    """``values`` clipped to ±``STORED_MAX`` and rounded to float16, as a new float32 array of
    the same shape (NaN stays NaN)."""
    clipped = np.clip(np.asarray(values, dtype=np.float32), -STORED_MAX, STORED_MAX)
    return clipped.astype(STORED_DTYPE).astype(np.float32)
