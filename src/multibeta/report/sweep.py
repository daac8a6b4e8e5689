"""The combined table of a sweep: one row per experiment, its headline numbers."""

from __future__ import annotations

from typing import Any, Sequence

from multibeta.report.markdown import _fmt, best_level, table


def headline(doc: dict[str, Any]) -> dict[str, Any]:
    """Best-level disentanglement, t=0 reconstruction and the best generation score of one experiment."""
    levels = doc["levels"]["levels"]
    best = best_level(levels)
    fds = [
        run[space]["fid"]
        for run in doc["generation"].values()
        for space in ("factor_classifier", "inception")
        if space in run
    ]
    return {
        "experiment": doc["experiment"],
        "best_key": best[0] if best else None,
        "best_value": best[1][best[0]] if best else None,
        "best_beta": best[1]["beta"] if best else None,
        "mse_t0": levels[0].get("mse"),
        "best_fd": min(fds) if fds else None,
    }


def render_sweep(docs: Sequence[dict[str, Any]]) -> str:
    rows = []
    for h in map(headline, docs):
        rows.append([
            h["experiment"], f"{h['best_key']}" if h["best_key"] else "–", _fmt(h["best_value"], "{:.3f}"),
            _fmt(h["best_beta"], "{:.3g}"), _fmt(h["mse_t0"], "{:.4f}"), _fmt(h["best_fd"], "{:.3f}"),
        ])
    return "# Sweep\n\n" + table(
        ["experiment", "disentanglement metric", "best value", "at β", "MSE at t=0", "best FD ↓"], rows
    ) + "\n"
