"""Trial lists as row indices into the embedding matrices of their two sides."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["index_trials"]


def index_trials(trials: Sequence[Tuple[str, str, int]], enroll_keys: Sequence[str],
                 test_keys: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(enroll_idx, test_idx, missing)`` for ``(enroll, test, label)`` trials: the row of each
    side in ``enroll_keys`` / ``test_keys`` (the same list when ``None``), -1 where the key is
    absent, and the mask of trials with an absent side."""
    e_index = {k: i for i, k in enumerate(enroll_keys)}
    t_index = e_index if test_keys is None or test_keys is enroll_keys else {
        k: i for i, k in enumerate(test_keys)}
    n = len(trials)
    ei = np.fromiter((e_index.get(a, -1) for a, _, _ in trials), dtype=np.int64, count=n)
    ti = np.fromiter((t_index.get(b, -1) for _, b, _ in trials), dtype=np.int64, count=n)
    return ei, ti, (ei < 0) | (ti < 0)
