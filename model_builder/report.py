"""The build report: one self-contained HTML file, plots embedded as PNG."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from model_builder.metadata import OutlierNote  # noqa: E402
from model_builder.scoring import Scores, combined_score  # noqa: E402

GOOD_COLOUR = "#2b8a3e"
DEFECT_COLOURS = ("#c92a2a", "#1971c2", "#e8590c", "#7048e8", "#c2255c", "#0c8599", "#f08c00", "#495057")


def _colour(label: str, index: int) -> str:
    """Good parts are always green; no defect type ever is."""
    return GOOD_COLOUR if label.startswith("good") else DEFECT_COLOURS[index % len(DEFECT_COLOURS)]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if np.isnan(v) else f"{v:.3f}"
    return html.escape(str(v))


def loss_plot(history: dict[str, list[float]]) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], style, label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Training and validation loss")
    return _png(fig)


def _groups(labels: list[str], values: np.ndarray) -> dict[str, np.ndarray]:
    return {lab: values[np.array(labels) == lab] for lab in sorted(set(labels), key=lambda s: (s != "good", s))}


def histogram_plot(groups: dict[str, np.ndarray], threshold: float, title: str, xlabel: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    every = np.concatenate(list(groups.values()))
    bins = np.linspace(np.percentile(every, 0.5), np.percentile(every, 99.5), 40)
    for i, (lab, vals) in enumerate(groups.items()):
        ax.hist(np.clip(vals, bins[0], bins[-1]), bins=bins, alpha=0.55, label=f"{lab} ({len(vals)})",
                color=_colour(lab, i))
    ax.axvline(threshold, color="k", lw=2, label=f"threshold {threshold:.4g}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7)
    return _png(fig)


def scatter_plot(groups_d: dict[str, np.ndarray], groups_e: dict[str, np.ndarray], t_density: float,
                 t_error: float, rule: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, lab in enumerate(groups_d):
        ax.scatter(groups_d[lab], groups_e[lab], s=14, alpha=0.75, label=lab, color=_colour(lab, i))
    ax.axvline(t_density, color="k", lw=1.5)
    ax.axhline(t_error, color="k", lw=1.5)
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    if rule == "and":
        ax.fill_between([x0, t_density], t_error, y1, color="red", alpha=0.08)
    else:
        ax.fill_between([x0, t_density], y0, y1, color="red", alpha=0.08)
        ax.fill_between([t_density, x1], t_error, y1, color="red", alpha=0.08)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("density (latent log-density)")
    ax.set_ylabel("reconstruction error")
    ax.set_title(f"Two-threshold rule ({rule.upper()}): shaded = anomaly")
    ax.legend(fontsize=7)
    return _png(fig)


def roc_plot(truth: np.ndarray, curves: dict[str, np.ndarray]) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, score in curves.items():
        fpr, tpr, _ = roc_curve(truth, score)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false alarm rate (good parts rejected)")
    ax.set_ylabel("recall (defects caught)")
    ax.set_title("ROC curves")
    ax.legend(fontsize=8)
    return _png(fig)


def confusion_plot(op: dict) -> str:
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    m = np.array([[op["tn"], op["fp"]], [op["fn"], op["tp"]]])
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=14, color="k")
    ax.set_xticks([0, 1], ["OK", "ANOMALY"])
    ax.set_yticks([0, 1], ["good", "defect"])
    ax.set_xlabel("verdict")
    ax.set_ylabel("truth")
    ax.set_title("At the chosen thresholds")
    return _png(fig)


def examples_plot(title: str, idx: list[int], evaluation, labels: list[str]) -> str:
    """Input, reconstruction (or the heatmap on the part, for a feature model) and heatmap of the test
    images `idx`, drawn again from the model."""
    if not idx:
        return f"<p>{html.escape(title)}: none.</p>"
    pictures, scores = evaluation.pictures(idx), evaluation.scores
    fig, axes = plt.subplots(len(idx), 3, figsize=(6, 2.1 * len(idx)), squeeze=False)
    titles = evaluation.scorer.view_titles
    overlaid = pictures.reconstructions is None  # features redrawn, not pixels: the heatmap over the part instead
    for row, i in enumerate(idx):
        image, heatmap = pictures.inputs[row], pictures.heatmaps[row]
        middle = image if overlaid else pictures.reconstructions[row]
        for col, (img, name) in enumerate(zip((image, middle, heatmap), titles)):
            ax = axes[row][col]
            ax.imshow(img.squeeze(), cmap="inferno" if col == 2 else ("gray" if img.shape[-1] == 1 else None))
            if col == 1 and overlaid:
                ax.imshow(heatmap, cmap="inferno", alpha=0.5, vmin=0, vmax=pictures.heat_scale)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"{labels[i]}\nd={scores.density[i]:.3g}\ne={scores.error[i]:.3g}", fontsize=7)
            if row == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title)
    return _png(fig)


def outliers_section(notes: list[OutlierNote], inputs: np.ndarray, limit: float) -> str:
    """The held-out good images left out of the calibration, with their pictures and scores."""
    if not notes:
        return ""
    fig, axes = plt.subplots(1, len(notes), figsize=(2.4 * len(notes), 2.6), squeeze=False)
    for ax, note, img in zip(axes[0], notes, inputs):
        ax.imshow(img.squeeze(), cmap="gray" if img.shape[-1] == 1 else None)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"d={note.density:.3g} e={note.reconstruction:.3g}", fontsize=8)
    names = "".join(f"<li><code>{html.escape(n.path)}</code></li>" for n in notes)
    return (f"<h2>Check these good images</h2><p>They score more than {limit:g} robust spreads beyond the other "
            "held-out good images and were left out of the calibration (one such image would set a threshold "
            "on its own). If a part is flawed, move its file out of train/good and rebuild; if it is good, "
            f"capture more parts like it.</p><ul>{names}</ul>" + _png(fig))


def metrics_table(summary: dict) -> str:
    op = summary["operating_point"]
    rows = [
        ("image AUROC, combined", summary["auroc_combined"]),
        ("image AUROC, density", summary["auroc_density"]),
        ("image AUROC, reconstruction error", summary["auroc_reconstruction"]),
        ("average precision, combined", summary.get("ap_combined")),
        ("pixel AUROC (error heatmap)", summary.get("pixel_auroc")),
        ("accuracy at thresholds", op["accuracy"]),
        ("precision at thresholds", op["precision"]),
        ("recall at thresholds", op["recall"]),
        ("F1 at thresholds", op["f1"]),
    ]
    for lab, v in summary.get("auroc_combined_by_defect", {}).items():
        rows.append((f"image AUROC, good vs {lab}", v))
    for rule, r in summary.get("rules", {}).items():
        rows.append((f"rule {rule.upper()} at the false-reject target: F1 / recall / accuracy",
                     f"{_fmt(r['operating_point']['f1'])} / {_fmt(r['operating_point']['recall'])} / "
                     f"{_fmt(r['operating_point']['accuracy'])}"))
    rec = summary.get("at_target_recall")
    if rec:
        t = rec["thresholds"]
        rows.append((f"thresholds for {rec['target_recall']:.0%} recall: density / reconstruction",
                     f"{t['density']:.4g} / {t['reconstruction']:.4g}"))
        rows.append(("… there: precision / recall / accuracy",
                     f"{_fmt(rec['operating_point']['precision'])} / {_fmt(rec['operating_point']['recall'])} / "
                     f"{_fmt(rec['operating_point']['accuracy'])}"))
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v) if not isinstance(v, str) else v}</td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


def render_report(bundle, history: dict, evaluation, val: Scores, outlier_inputs: np.ndarray | None = None) -> str:
    """The whole report as one HTML string; `outlier_inputs` are the pictures of the held-out good
    images the calibration left out (bundle.info.calibration.outliers)."""
    info, t = bundle.info, bundle.thresholds
    prov, cal = info.provenance, info.calibration
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Gutcheck build report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td{border:1px solid #ccc;padding:3px 8px}"
        "img{max-width:100%;margin:6px}h2{border-bottom:1px solid #ddd}</style></head><body>",
        "<h1>Gutcheck build report</h1>",
        f"<p>Dataset <code>{html.escape(prov.dataset)}</code>, {prov.train_images} "
        f"good images; architecture <b>{html.escape(info.architecture)}</b>, density preset "
        f"<b>{html.escape(info.density_preset)}</b> (bandwidth {info.density_bandwidth:.3g}), "
        f"reconstruction score <b>{bundle.reconstruction_score.kind}</b>, built {html.escape(prov.built)}."
        "</p>",
        f"<p><b>Rule:</b> anomaly if density &lt; {t.density:.4g} <b>{t.rule.upper()}</b> reconstruction error "
        f"&gt; {t.reconstruction:.4g}. Calibrated on {cal.validation_images} held-out good "
        f"images for a {cal.target_false_reject_rate:.1%} false-reject rate, shared by the two halves, each "
        f"threshold where the held-out goods' tail says (extrapolated when they are too few to show it): "
        f"{html.escape(cal.expectation())}.</p>",
        "<h2>Training</h2>", loss_plot(history),
    ]
    if cal.outliers and outlier_inputs is not None:
        parts.append(outliers_section(cal.outliers, outlier_inputs, cal.outlier_limit))
    if evaluation is None:
        parts += ["<h2>Held-out good images</h2><p>No test/ folder: no defect images to evaluate against.</p>",
                  histogram_plot({"good (validation)": val.density}, t.density, "Density", "density"),
                  histogram_plot({"good (validation)": val.error}, t.reconstruction, "Reconstruction error",
                                 "reconstruction error")]
    else:
        s, labels = evaluation.scores, evaluation.test.labels
        truth = evaluation.test.is_anomaly
        gd, ge = _groups(labels, s.density), _groups(labels, s.error)
        comb = combined_score(s.density, s.error, bundle.good_statistics, bundle.combination)
        parts += [
            "<h2>Metrics on test/</h2>", metrics_table(evaluation.summary),
            "<h2>Scores: good vs each defect type</h2>",
            histogram_plot(gd, t.density, "Density (low = unlike good parts)", "density"),
            histogram_plot(ge, t.reconstruction, "Reconstruction error (high = not redrawn)", "reconstruction error"),
            scatter_plot(gd, ge, t.density, t.reconstruction, t.rule),
        ]
        if truth.any() and not truth.all():
            parts.append(roc_plot(truth, {"density": -s.density, "reconstruction error": s.error,
                                          f"score ({bundle.combination})": comb}))
        parts.append(confusion_plot(evaluation.summary["operating_point"]))
        missed = [i for i in np.argsort(comb) if truth[i] and not s.anomaly[i]][:4]
        alarms = [i for i in np.argsort(-comb) if not truth[i] and s.anomaly[i]][:4]
        typical = []  # per defect type, the image with the median score: what the heatmap usually shows
        for label in sorted(set(labels) - {"good"}):
            idx = [i for i in range(len(labels)) if labels[i] == label]
            typical.append(sorted(idx, key=lambda i: comb[i])[len(idx) // 2])
        parts += ["<h2>Heatmaps: a typical image of each defect type</h2>",
                  "<p>The heatmap is what the verdict is made of: per position, how far the density and the "
                  "reconstruction error lie from the held-out good parts, added as the score adds them.</p>"
                  if bundle.map_statistics is not None else "",
                  examples_plot("The median-scoring image of each defect type", typical[:8], evaluation, labels)]
        parts += ["<h2>Worst misses and false alarms</h2>",
                  examples_plot("Defects passed as OK (lowest scores first)", missed, evaluation, labels),
                  examples_plot("Good parts rejected (highest scores first)", alarms, evaluation, labels)]
    parts.append("</body></html>")
    return "\n".join(parts)
