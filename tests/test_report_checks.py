"""The report's checks of the method read the right numbers and compare them with their targets."""

from __future__ import annotations

import copy

from multibeta.report.checks import best_few_step_run, checks_table, method_checks


def _run(name: str, variant: str, steps: int, nfe: int, *, valid: float, fd: float, tv: float,
         n: int = 2000) -> dict:
    render = {"valid_fraction": valid, "valid_iou": 0.9, **{f"tv.{f}": tv for f in ("shape", "scale", "posX", "posY")}}
    return {"run": {"name": name, "variant": variant, "steps": steps, "n_samples": n},
            "timing": {"nfe_per_sample": nfe}, "factor_classifier": {"fid": fd, "n_samples": n},
            "render": render}


DOC = {
    "levels": {"levels": [
        {"t": 0.0, "beta": 0.1, "recon_accuracy.shape": 0.97, "recon_iou_to_input": 0.95,
         "ica_factorvae_score": 0.70, "ica_mig": 0.15},
        {"t": 0.5, "beta": 3.2, "recon_accuracy.shape": 0.5, "recon_iou_to_input": 0.7,
         "ica_factorvae_score": 0.80, "ica_mig": 0.25},
    ]},
    "generation": {
        "anc": _run("anc", "multibeta", 1000, 1000, valid=0.95, fd=0.5, tv=0.01),
        "heun": _run("heun", "multibeta", 10, 19, valid=0.80, fd=0.9, tv=0.05),
        "euler": _run("euler", "multibeta", 50, 50, valid=0.60, fd=0.8, tv=0.05),
        "ldm": _run("ldm", "standard_ldm", 10, 19, valid=0.7, fd=1.0, tv=0.05),
    },
    "sharpen": {"levels": [
        {"t_b": 0.25, "decoded": {"iou_to_input": 0.9}, "denoised": {"iou_to_input": 0.8}},
        {"t_b": 0.5, "decoded": {"iou_to_input": 0.5}, "denoised": {"iou_to_input": 0.7}},
        {"t_b": 1.0, "decoded": {"iou_to_input": 0.1}, "denoised": {"iou_to_input": 0.3}},
    ]},
}


def test_best_few_step_run_ignores_slow_and_baseline_runs() -> None:
    name, _ = best_few_step_run(DOC["generation"])
    assert name == "heun"  # ancestral has 1000 NFE; euler is less valid; ldm is the baseline


def test_all_checks_met_and_each_can_fail() -> None:
    checks = method_checks(DOC, primary_basis="ica")
    assert [c.met for c in checks] == [True] * 6
    assert "0.90×" in checks[3].value  # heun's FD over the best standard_ldm run
    assert "| met |" in checks_table(checks)
    broken = copy.deepcopy(DOC)
    broken["levels"]["levels"][0]["recon_accuracy.shape"] = 0.9
    broken["generation"]["heun"]["render"]["tv.posX"] = 0.2
    broken["generation"]["ldm"]["factor_classifier"]["fid"] = 0.8
    broken["sharpen"]["levels"][2]["denoised"]["iou_to_input"] = 0.05
    broken["levels"]["levels"][1]["ica_mig"] = 0.1
    met = [c.met for c in method_checks(broken, primary_basis="ica")]
    assert met == [False, True, False, False, False, False]
    # the primary basis decides which scores are read: none in PCA here, so no such check
    assert len(method_checks(DOC, primary_basis="pca")) == 5


def test_fd_ratio_compares_only_runs_with_as_many_samples() -> None:
    """FD grows as the sample set shrinks: a smaller baseline run must not make the ratio look good."""
    doc = copy.deepcopy(DOC)
    doc["generation"]["ldm_small"] = _run("ldm_small", "standard_ldm", 1000, 1000, valid=0.7, fd=2.0, tv=0.05, n=1000)

    def fd_check(d: dict) -> object:
        return next(c for c in method_checks(d, primary_basis="ica") if "domain FD" in c.what)

    check = fd_check(doc)  # the 1,000-sample run's worse FD is not the one compared with
    assert check.met and "`ldm`" in check.what and "0.90×" in check.value
    del doc["generation"]["ldm"]
    check = fd_check(doc)
    assert check.met is None and "no standard_ldm run of 2000 samples" in check.value


def test_sharpening_may_cost_a_little_only_where_the_decode_is_lossless() -> None:
    doc = copy.deepcopy(DOC)
    t0_iou = doc["levels"]["levels"][0]["recon_iou_to_input"]
    levels = doc["sharpen"]["levels"]
    levels[1]["decoded"]["iou_to_input"] = t0_iou - 0.005  # nothing lost at t_b = 0.5 yet
    levels[1]["denoised"]["iou_to_input"] = t0_iou - 0.012  # 0.007 lower: allowed

    def sharpen_check(d: dict) -> object:
        return next(c for c in method_checks(d, primary_basis="ica") if c.what.startswith("sharpening"))

    check = sharpen_check(doc)
    assert check.met and "(lossless)" in check.value
    levels[1]["denoised"]["iou_to_input"] = t0_iou - 0.02  # 0.015 lower: too much
    assert not sharpen_check(doc).met
    levels[1]["decoded"]["iou_to_input"] = t0_iou - 0.05  # information lost: must gain
    levels[1]["denoised"]["iou_to_input"] = t0_iou - 0.051
    assert not sharpen_check(doc).met


def test_report_says_how_the_ica_basis_was_fitted_and_lists_its_optima() -> None:
    from multibeta.report.markdown import ica_fit_text

    levels = [{"t": 0.0, "ica_fit_converged": True, "ica_fit_restarts": 8, "ica_fit_restarts_converged": 7},
              {"t": 0.5, "ica_fit_converged": False, "ica_fit_restarts": 8, "ica_fit_restarts_converged": 0}]
    optima = {"t": 0.0, "optima": [{"objective": 4.1e-3, "starts": 5, "factorvae_score": 0.62, "mig": 0.10},
                                   {"objective": 3.9e-3, "starts": 2, "factorvae_score": 0.68, "mig": 0.13}],
              "range": {"factorvae_score": [0.62, 0.68], "mig": [0.10, 0.13]}}
    text = "\n".join(ica_fit_text(levels, optima))
    assert "no start converged at t = 0.500" in text
    assert "| 1 | 4.100 | 5 | 0.620 | 0.100 |" in text and "0.620 – 0.680" in text
    converged = "\n".join(ica_fit_text(levels[:1], None))
    assert "converged at every scored level" in converged and "7/8 starts" in converged
    assert ica_fit_text([{"t": 0.0}], None) == []  # no ica basis scored: nothing said
