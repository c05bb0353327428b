"""`gutcheck recalibrate --model M --log-dir D`: propose new thresholds for a line whose good parts
moved (after a drift warning, say), show them against today's on a histogram, and write them to
the settings file only when asked (`--write SETTINGS`, the damaged-file backup rule holds).

How: the median of the last logged parts of this model (all of them: a median is not moved by a
minority of defects) against the calibration's median gives how far the good parts moved, in
each score; the calibration's held-out goods, moved by that much, are calibrated again at the
bundle's false-reject target. Fitting thresholds to the logged parts *judged good* instead would
only ever tighten them: those parts passed today's thresholds. Measured on the synthetic line with
the light 10 % brighter (bench/drift.py): 26 % of good parts rejected; 28 % with a proposal fitted to
the parts judged good, 9 % with this one, every defect still caught.
This assumes defects are a minority of the logged parts; a proposal that moves a threshold by more
than LARGE_SHIFT spreads says to look at the logged images first: the part itself may look different,
and then `gutcheck build --update` with new good images is the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capture.errors import GutcheckError
from capture.imageio import write_bytes_atomic
from model_builder.calibrate import thresholds_at_frr
from model_builder.scoring import Thresholds, is_anomaly

MIN_LOGGED_PARTS = 30
LARGE_SHIFT = 3.0  # spreads: beyond this, look at the logged images before writing


@dataclass
class Proposal:
    current: Thresholds
    proposed: Thresholds
    parts: int  # logged parts it is based on
    density_shift: float  # how far the good parts moved, in robust spreads
    error_shift: float
    rejected_now: float  # share of the logged parts the current thresholds reject
    rejected_proposed: float  # and the proposal (defects included)
    density: np.ndarray  # the logged parts' scores
    error: np.ndarray

    @property
    def large_shift(self) -> bool:
        """The parts moved so far that the premise (defects a minority, the same part) is in doubt."""
        return max(abs(self.density_shift), abs(self.error_shift)) > LARGE_SHIFT

    def lines(self) -> list[str]:
        c, p = self.current, self.proposed
        warning = [f"warning: the parts moved more than {LARGE_SHIFT:g} spreads; look at the logged images before "
                   "writing this (if the part itself looks different, add new good images: gutcheck build --update)"] \
            if self.large_shift else []
        return [f"{self.parts} parts of this model in the log; their medians moved {self.density_shift:+.2f} "
                f"spreads (density) and {self.error_shift:+.2f} (reconstruction error) from the calibration's",
                f"now:      density < {c.density:.4g} {c.rule} reconstruction error > {c.reconstruction:.4g} "
                f"(rejects {self.rejected_now:.1%} of the logged parts)",
                f"proposed: density < {p.density:.4g} {p.rule} reconstruction error > {p.reconstruction:.4g} "
                f"(rejects {self.rejected_proposed:.1%} of them, defects included)", *warning]


def propose(bundle, log, current: Thresholds | None = None, target_frr: float | None = None,
            limit: int = 200) -> Proposal:
    """Thresholds at the false-reject target for the calibration's goods moved as the logged parts moved."""
    from app.drift import calibration_goods

    current = current or bundle.thresholds
    density, error, anomaly = log.recent_scores(bundle.info.model_id, limit)
    if len(density) < MIN_LOGGED_PARTS:
        others = [m for m in log.model_ids() if m != bundle.info.model_id]
        hint = f" (the log holds parts of {', '.join(others[:3])})" if others else ""
        raise GutcheckError(f"only {len(density)} parts of model {bundle.info.model_id} in the log; need "
                            f"{MIN_LOGGED_PARTS}{hint}")
    ref_density, ref_error = calibration_goods(bundle)
    stats = bundle.good_statistics
    finite = np.isfinite(density) & np.isfinite(error)
    density_shift = (float(np.median(density[finite])) - stats.density_median) / stats.density_spread
    error_shift = (float(np.median(error[finite])) - stats.error_median) / stats.error_spread
    target = target_frr if target_frr is not None else bundle.info.calibration.target_false_reject_rate
    proposed = thresholds_at_frr(ref_density + density_shift * stats.density_spread,
                                 ref_error + error_shift * stats.error_spread, target, current.rule)
    return Proposal(current, proposed, len(density), density_shift, error_shift,
                    float(is_anomaly(density, error, current).mean()),
                    float(is_anomaly(density, error, proposed).mean()), density, error)


def histogram_png(proposal: Proposal) -> bytes:
    """Both scores of the logged parts with today's and the proposed thresholds."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, values, now, new, name in ((axes[0], proposal.density, proposal.current.density,
                                        proposal.proposed.density, "density (lower = worse)"),
                                       (axes[1], proposal.error, proposal.current.reconstruction,
                                        proposal.proposed.reconstruction, "reconstruction error (higher = worse)")):
        ax.hist(values, bins=40, color="#1971c2", alpha=0.7, label=f"logged parts ({len(values)})")
        ax.axvline(now, color="k", lw=2, label=f"now {now:.4g}")
        ax.axvline(new, color="#e8590c", lw=2, ls="--", label=f"proposed {new:.4g}")
        ax.set_xlabel(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def write_proposal(proposal: Proposal, settings_path: Path, bundle) -> Path | None:
    """The proposed thresholds into the settings file (other settings kept; a damaged file is backed
    up first); returns the backup's path, if one was made."""
    from app.settings import Settings, load_settings, save_settings, with_thresholds

    try:
        settings = load_settings(settings_path)
    except GutcheckError:
        settings = Settings()  # save_settings keeps the damaged file as a dated backup
    return save_settings(settings_path, with_thresholds(settings, bundle, proposal.proposed))


def save_histogram(proposal: Proposal, folder: Path) -> Path:
    import time

    path = Path(folder) / f"recalibration-{time.strftime('%Y%m%d-%H%M%S')}.png"
    write_bytes_atomic(path, histogram_png(proposal))
    return path
