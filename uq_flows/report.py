"""A loop's figures and a one-page HTML summary (``uq-flows report``).

Engine-free: ``LoopReport`` holds plain arrays and rows (``manager.results.report_data``
reads them from the store); ``write_report`` draws the figures of paper 001 (Figs. 2-4)
for the loop's DFT-labelled structures and its per-iteration progress, and embeds them in
one self-contained HTML page.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uq_flows import plots
from uq_flows.records import jsonable
from uq_flows.uncertainty import (
    ReferenceErrors,
    accuracy_coverage,
    summarize_thresholds,
)


def weighting(source: str) -> str:
    """How U weighted the members, in words, from an ``UncertaintyDocument.weights_source``."""
    if source == "equal":
        return "equally weighted"
    if source == "unknown":
        return "weighted"
    return f"inverse-RMSE-weighted (force RMSEs: {'OMat24 test, paper 001 Table S1' if source == 'paper' else source})"


@dataclass(frozen=True)
class LoopReport:
    """What the report draws: per-iteration rows, every scored candidate's U, the DFT errors.

    ``dft``: every DFT-labelled structure (mostly U ≥ U_c: range-restricted); ``audit``: the
    random audit samples, the unbiased sample for ρ and the RMSE below U_c (METHODS §2).
    """

    loop: str
    state: str
    members: list[str]
    weights_source: str = "unknown"  # what weighted the members: equal, paper, given, or an RMSE file
    iterations: list[dict] = field(default_factory=list)
    candidate_u: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dft: ReferenceErrors = field(default_factory=lambda: ReferenceErrors.concatenate([]))
    audit: ReferenceErrors = field(default_factory=lambda: ReferenceErrors.concatenate([]))

    def unbiased(self) -> tuple[ReferenceErrors, str]:
        """The audit sample when it has ≥ 3 structures, else every DFT label, and which it is."""
        if len(self.audit) >= 3:
            return self.audit, f"the random audit sample (n = {len(self.audit)})"
        return self.dft, f"DFT-labelled structures (n = {len(self.dft)}; mostly U ≥ U_c, no audit sample: biased)"


FIGURES = {
    "u_vs_error": "U against the error of the ensemble-mean forces (max over atoms) on every DFT-labelled structure: "
                  "a U that predicts the error puts the points along y = x (paper 001, Fig. 2).",
    "accuracy_coverage": "Force RMSE of the ensemble mean over the DFT-labelled structures kept when the most "
                         "uncertain are dropped first: a useful U makes it fall as coverage falls.",
    "force_rmse_vs_uc": "Against the threshold U_c: force RMSE of the ensemble mean over the random audit sample's "
                        "structures below it (the accuracy uMLIP labels would have) and the share of candidates at or "
                        "above it (the DFT they would cost).",
    "progress": "Per iteration: labels by source, DFT share, training-set size, ACE fit RMSEs (train; test on the "
                "iteration's audit sample, held out of that fit) and ρ(U, error) on the audit sample.",
}


def threshold_curve(report: LoopReport, n_points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U_c grid, force RMSE of DFT-labelled structures with U < U_c, fraction of candidates with U ≥ U_c."""
    values = np.concatenate([report.candidate_u, report.dft.u])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    uc = np.geomspace(values.min() / 1.5, values.max() * 1.5, n_points)
    dft, _ = report.unbiased()
    if len(dft):
        below = summarize_thresholds(dft.u, dft.n_components // 3, uc, dft.sq_sum, dft.n_components)
        rmse = np.array([row.force_rmse_below for row in below])
    else:
        rmse = np.full(uc.size, np.nan)
    scored = report.candidate_u[np.isfinite(report.candidate_u)]
    fraction = (scored[None, :] >= uc[:, None]).mean(axis=1) if scored.size else np.full(uc.size, np.nan)
    return uc, rmse, fraction


def draw_figures(report: LoopReport, folder: Path) -> dict[str, Path]:
    """The four PNGs of ``FIGURES`` in ``folder``."""
    dft = report.dft
    paths = {"u_vs_error": plots.uncertainty_parity(dft.u, dft.max_error, folder / "u_vs_error.png", dft.spearman(),
                                                    groups=dft.iteration)}
    coverage, rmse = (np.zeros(0), np.zeros(0))
    if len(dft):
        curve = accuracy_coverage(dft.u, None, dft.sq_sum, dft.n_components)
        coverage, rmse = curve.coverage, curve.force_rmse
    paths["accuracy_coverage"] = plots.accuracy_coverage(
        coverage, None, rmse, folder / "accuracy_coverage.png",
        title=f"ensemble-mean forces on {len(dft)} DFT-labelled structures, most uncertain dropped first")
    uc, rmse, fraction = threshold_curve(report)
    used = {f"iteration {row['iteration']}": row.get("uc") for row in report.iterations}
    if len({v for v in used.values() if v is not None}) == 1:  # one threshold for the whole loop: one line
        used = {"used": next(v for v in used.values() if v is not None)}
    paths["force_rmse_vs_uc"] = plots.threshold_tradeoff(uc, rmse, fraction, folder / "force_rmse_vs_uc.png", used)
    paths["progress"] = plots.iteration_progress(report.iterations, folder / "progress.png")
    return paths


def write_report(report: LoopReport, out: str | Path) -> dict[str, Path]:
    """PNGs, ``summary.json`` and ``index.html`` in ``out``; all drawn before any file there changes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        paths = draw_figures(report, staging)
        (staging / "summary.json").write_text(json.dumps(jsonable(summary(report)), indent=1))
        (staging / "index.html").write_text(render_html(report, paths))
        final = {}
        for path in (*paths.values(), staging / "summary.json", staging / "index.html"):
            final[path.stem] = out / path.name
            os.replace(path, out / path.name)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def summary(report: LoopReport) -> dict:
    """Headline numbers of the loop and the per-iteration rows."""
    scored = int(np.isfinite(report.candidate_u).sum())
    last = next((row for row in reversed(report.iterations) if row.get("complete")), None)
    dft_total = max((row.get("dft_total") or 0 for row in report.iterations), default=0)
    return {
        "loop": report.loop, "state": report.state, "members": report.members,
        "n_iterations": len(report.iterations), "n_scored": scored, "n_dft_calculations": dft_total,
        "spearman_dft": report.dft.spearman(), "n_dft_errors": len(report.dft),
        "spearman_audit": report.audit.spearman(), "n_audit": len(report.audit),
        "final_fit": None if last is None else {k: last.get(k) for k in (
            "iteration", "n_training", "train_energy_rmse_per_atom", "train_force_rmse", "test_energy_rmse_per_atom",
            "test_force_rmse")},
        "iterations": report.iterations,
    }


COLUMNS = (
    ("iteration", "iteration", None), ("candidates", "n_candidates", None), ("U_c (eV/Å)", "uc", 3),
    ("high U", "n_high_u", None), ("DFT ok", "n_dft_ok", None), ("DFT failed", "n_dft_failed", None),
    ("rejected", "n_rejected", None), ("teacher", "n_teacher", None), ("training", "n_training", None),
    ("train E (meV/atom)", "train_energy_rmse_per_atom", 3), ("train F (eV/Å)", "train_force_rmse", 3),
    ("test E (meV/atom)", "test_energy_rmse_per_atom", 3), ("test F (eV/Å)", "test_force_rmse", 3),
    ("audit", "n_audit", None), ("ρ(U, error) audit", "spearman_audit", 2),
    ("CAGO σ_cal = a·σ̂^b: a", "calibration.a", 3), ("b", "calibration.b", 3),
    ("z std (uncal. → cal.)", "calibration.z_std", 2), ("decision", "reason", None),
)


def _cell(row: dict, key: str, digits: int | None) -> str:
    outer, _, inner = key.partition(".")
    value = (row.get(outer) or {}).get(inner) if inner else row.get(key)
    if key == "reason" and not row.get("complete", True):
        return "running"
    if key == "calibration.z_std" and value is not None:
        return f"{row['calibration']['z_std_uncalibrated']:.{digits}g} → {value:.{digits}g}"
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if key.endswith("energy_rmse_per_atom"):
        value = value * 1000
    return f"{value:.{digits}g}" if digits else str(value)


def render_html(report: LoopReport, figures: dict[str, Path]) -> str:
    """One self-contained page: headline numbers, the iteration table, the figures inline."""
    head = summary(report)
    rho, rho_audit = head["spearman_dft"], head["spearman_audit"]
    final = head["final_fit"] or {}
    facts = [
        ("state", report.state), ("ensemble", ", ".join(report.members) or "—"),
        ("iterations", str(head["n_iterations"])), ("structures scored", str(head["n_scored"])),
        ("DFT calculations", f"{head['n_dft_calculations']} ({_percent(head['n_dft_calculations'], head['n_scored'])} of the structures scored)"),
        ("ρ(U, force error) on the random audit sample", "—" if rho_audit is None
         else f"{rho_audit:.2f} (n = {head['n_audit']})"),
        ("ρ(U, force error) on all DFT labels (mostly U ≥ U_c: range-restricted)",
         "—" if rho is None else f"{rho:.2f} (n = {head['n_dft_errors']})"),
        ("latest fit, train force RMSE", _cell(final, "train_force_rmse", 3) + " eV/Å"),
    ]
    e = html.escape
    rows = "\n".join("<tr>" + "".join(f"<td>{e(_cell(row, key, digits))}</td>" for _, key, digits in COLUMNS) + "</tr>"
                     for row in report.iterations)
    images = "\n".join(
        f'<figure class="{"wide" if name == "progress" else "half"}"><img alt="{e(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(figures[name].read_bytes()).decode()}"><figcaption>{e(caption)}</figcaption></figure>'
        for name, caption in FIGURES.items() if name in figures)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>uq-flows report: {e(report.loop)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }}
th {{ background: #f2f2f2; }} dl {{ display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }}
dt {{ font-weight: 600; }} dd {{ margin: 0; }}
figure {{ display: inline-block; width: 46%; margin: 0.5em; vertical-align: top; }} figure.wide {{ width: 96%; }}
img {{ max-width: 100%; }}
figcaption {{ font-size: 0.85em; color: #555; }}
</style></head><body>
<h1>uq-flows loop {e(report.loop)}</h1>
<p>Report written {e(time.strftime("%Y-%m-%d %H:%M %Z"))}. U is the {e(weighting(report.weights_source))} spread of the uMLIP
ensemble's forces (Liu et al., npj Comput. Mater. 12, 34 (2026), eq. 1); its error is that of the ensemble-mean
forces against DFT (eq. 5), known only where DFT was run: above U_c, and on a random audit sample of every
iteration, which is the unbiased sample for ρ and for the RMSE below U_c.</p>
<dl>{"".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts)}</dl>
<table><tr>{"".join(f"<th>{e(title)}</th>" for title, _, _ in COLUMNS)}</tr>
{rows}
</table>
{images}
</body></html>
"""


def _percent(part: int, whole: int) -> str:
    return "—" if not whole else f"{100 * part / whole:.0f}%"
