"""Validation-EER curves: one run (``valid_eer.png``) or several systems compared (MP-2021 Fig. 2)."""
from __future__ import annotations

from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from pysv.utils.io import atomic_path


def plot_eer_curves(histories: Dict[str, List[dict]], out_png, title: str = "Validation EER per epoch") -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, hist in sorted(histories.items()):
        pts = [(h["epoch"], h["valid_eer"]) for h in hist if "valid_eer" in h]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("EER (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if histories:
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
