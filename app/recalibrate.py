"""`gutcheck recalibrate --model M --log-dir D`: propose new thresholds from the parts the station
logged as good (after a drift warning, say), show them against today's on a histogram, and write
them to the settings file only when asked (`--write SETTINGS`, the damaged-file backup rule holds).

The logged goods are the parts today's thresholds passed, so a proposal can only tighten what it
keeps: it is for a line whose good parts moved, not for one whose thresholds were wrong to begin with
(that is a rebuild, or `gutcheck build --update` with the new good parts).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from capture.errors import GutcheckError
from capture.imageio import write_bytes_atomic
from model_builder.calibrate import thresholds_at_frr
from model_builder.scoring import Thresholds, is_anomaly

MIN_LOGGED_GOODS = 30


@dataclass
class Proposal:
    current: Thresholds
    proposed: Thresholds
    parts: int  # logged good parts it is based on
    rejected_now: float  # share of them the current thresholds reject (0: they passed them)
    rejected_proposed: float
    density: np.ndarray
    error: np.ndarray

    def lines(self) -> list[str]:
        c, p = self.current, self.proposed
        return [f"{self.parts} parts judged good by this model in the log",
                f"now:      density < {c.density:.4g} {c.rule} reconstruction error > {c.reconstruction:.4g}",
                f"proposed: density < {p.density:.4g} {p.rule} reconstruction error > {p.reconstruction:.4g} "
                f"(rejects {self.rejected_proposed:.1%} of these good parts)"]


def propose(bundle, log, current: Thresholds | None = None, target_frr: float | None = None,
            limit: int = 500) -> Proposal:
    """Thresholds at the bundle's false-reject target on the last `limit` logged goods of this model."""
    current = current or bundle.thresholds
    density, error = log.good_scores(bundle.info.model_id, limit)
    if len(density) < MIN_LOGGED_GOODS:
        others = [m for m in log.model_ids() if m != bundle.info.model_id]
        hint = f" (the log holds parts of {', '.join(others[:3])})" if others else ""
        raise GutcheckError(f"only {len(density)} parts judged good by model {bundle.info.model_id} in the log; "
                            f"need {MIN_LOGGED_GOODS}{hint}")
    target = target_frr if target_frr is not None else bundle.info.calibration.target_false_reject_rate
    proposed = thresholds_at_frr(density, error, target, current.rule)
    return Proposal(current, proposed, len(density), float(is_anomaly(density, error, current).mean()),
                    float(is_anomaly(density, error, proposed).mean()), density, error)


def histogram_png(proposal: Proposal) -> bytes:
    """Both scores of the logged goods with today's and the proposed thresholds."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, values, now, new, name in ((axes[0], proposal.density, proposal.current.density,
                                        proposal.proposed.density, "density (lower = worse)"),
                                       (axes[1], proposal.error, proposal.current.reconstruction,
                                        proposal.proposed.reconstruction, "reconstruction error (higher = worse)")):
        ax.hist(values, bins=40, color="#2b8a3e", alpha=0.7, label=f"logged good parts ({len(values)})")
        ax.axvline(now, color="k", lw=2, label=f"now {now:.4g}")
        ax.axvline(new, color="#e8590c", lw=2, ls="--", label=f"proposed {new:.4g}")
        ax.set_xlabel(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def write_proposal(proposal: Proposal, settings_path: Path, model_path: Path) -> Path | None:
    """The proposed thresholds into the settings file (other settings kept; a damaged file is backed
    up first); returns the backup's path, if one was made."""
    from app.settings import Settings, load_settings, save_settings

    try:
        settings = load_settings(settings_path)
    except GutcheckError:
        settings = Settings()  # save_settings keeps the damaged file as a dated backup
    p = proposal.proposed
    settings = replace(settings, model=str(model_path), density_threshold=p.density,
                       reconstruction_threshold=p.reconstruction, rule=p.rule)
    return save_settings(settings_path, settings)


def save_histogram(proposal: Proposal, folder: Path) -> Path:
    import time

    path = Path(folder) / f"recalibration-{time.strftime('%Y%m%d-%H%M%S')}.png"
    write_bytes_atomic(path, histogram_png(proposal))
    return path
