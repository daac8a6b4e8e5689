"""Disentanglement metrics on synthetic data with known answers, and their shared primitives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from multibeta.metrics.config import MetricsConfig, select_levels
from multibeta.metrics.disentanglement import compute_disentanglement
from multibeta.metrics.dci import _completeness, _disentanglement, compute_dci
from multibeta.metrics.factorvae import FixedFactorSampler, compute_factorvae, image_representation
from multibeta.metrics.mig import compute_mig
from multibeta.metrics.sap import compute_sap
from multibeta.metrics.tad import _auroc_matrix, compute_tad
from multibeta.metrics.utils import (
    binary_entropy_reduction,
    discrete_entropy,
    discrete_mutual_info,
    histogram_discretize,
    sample_rows,
    split_rows,
)
from multibeta.workflow.config import ConfigError, section_defaults

SIZES = (3, 6, 10, 8)  # <= 20 values each, so 20-bin MIG keeps every value apart
N = 2000


def _cfg(**overrides) -> MetricsConfig:
    return MetricsConfig.from_section(section_defaults("metrics", overrides))


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.stack([rng.integers(0, k, size=N) for k in SIZES], axis=1)


@pytest.fixture(scope="module")
def identity_code(factors: np.ndarray) -> np.ndarray:
    """The factors, scaled, shifted, permuted, plus two dead (constant) dimensions."""
    scaled = factors * np.array([0.7, -1.3, 0.4, 2.0]) + 3.0
    return np.c_[np.zeros(N), scaled[:, [2, 0, 3, 1]], np.zeros(N)]


@pytest.fixture(scope="module")
def noise_code() -> np.ndarray:
    return np.random.default_rng(2).normal(size=(N, 6))


# --- shared primitives, against hand-computed values -------------------------------------


def test_histogram_discretize_hand_values() -> None:
    x = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    # column 0: edges [0, 1.5, 3] -> digitize on [0, 1.5]: 0,1 -> bin 1; 2,3 -> bin 2.
    # column 1 is constant: np.histogram spans [4.5, 5.5], edges [4.5, 5.0] -> all in bin 2.
    np.testing.assert_array_equal(histogram_discretize(x, 2), [[1, 2], [1, 2], [2, 2], [2, 2]])
    assert set(np.unique(histogram_discretize(np.arange(100.0)[:, None], 20))) == set(range(1, 21))


def test_entropy_and_mutual_information_hand_values() -> None:
    y = np.array([[0, 0, 7], [0, 1, 7], [1, 2, 7], [1, 3, 7]])
    np.testing.assert_allclose(discrete_entropy(y), [math.log(2), math.log(4), 0.0], atol=1e-12)
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])  # col 0 == y0; col 1 independent of y0
    m = discrete_mutual_info(codes, y[:, :2])
    np.testing.assert_allclose(m[:, 0], [math.log(2), 0.0], atol=1e-12)
    np.testing.assert_allclose(m[:, 1], [math.log(2), math.log(2)], atol=1e-12)  # y1 determines both


def test_binary_entropy_reduction_hand_values() -> None:
    a = np.array([0, 0, 1, 1])
    labels = np.stack([a, a, [0, 1, 0, 1], [1, 1, 1, 1]], axis=1)
    r = binary_entropy_reduction(labels)
    np.testing.assert_allclose(r[:3], [1.0, 1.0, 0.0], atol=1e-12)
    assert np.isnan(r[3])  # constant label: undefined, never passes a threshold


def test_row_sampling() -> None:
    rng = np.random.default_rng(0)
    assert len(sample_rows(100, 30, rng)) == 30 and len(np.unique(sample_rows(100, 30, rng))) == 30
    np.testing.assert_array_equal(sample_rows(10, 30, rng), np.arange(10))
    train, test = split_rows(100, 50, 20, rng)
    assert len(train) == 50 and len(test) == 20 and not set(train) & set(test)
    train, test = split_rows(30, 20, 10, rng)  # exactly enough
    assert len(train) == 20 and len(test) == 10
    train, test = split_rows(15, 20, 10, rng)  # scaled down 2:1
    assert len(train) == 10 and len(test) == 5 and not set(train) & set(test)


# --- MIG ----------------------------------------------------------------------------------


def test_mig_known_answers(factors, identity_code, noise_code) -> None:
    cfg = _cfg().mig
    good = compute_mig(identity_code, factors, cfg, seed=0, factor_names=list("abcd"))
    assert good["mig"] > 0.99 and good["mig.c"] > 0.99
    assert good["seed"] == 0 and good["elapsed_s"] >= 0 and good["mig_n_factors"] == 4
    assert compute_mig(noise_code, factors, cfg, seed=0)["mig"] < 0.05
    # A duplicated latent: two identical dimensions per factor leave no gap.
    dup = np.c_[identity_code, identity_code]
    assert compute_mig(dup, factors, cfg, seed=0)["mig"] == pytest.approx(0.0, abs=1e-12)


def test_mig_drops_constant_factors(factors, identity_code) -> None:
    with_constant = np.c_[factors, np.zeros(N, dtype=np.int64)]
    res = compute_mig(identity_code, with_constant, _cfg().mig, seed=0)
    assert res["mig_n_factors"] == 4 and res["mig"] > 0.99


# --- DCI ----------------------------------------------------------------------------------


def test_dci_importance_matrix_hand_values() -> None:
    assert _disentanglement(np.eye(3)) == pytest.approx(1.0, abs=1e-6)
    assert _completeness(np.eye(3)) == pytest.approx(1.0, abs=1e-6)
    assert _disentanglement(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-6)
    assert _completeness(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-6)
    # Two codes both about factor 0, nothing about factor 1: each code is pure (D = 1) but
    # factor 0 is split over two codes (entropy base 2 = 1) -> C = 0.
    r = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert _disentanglement(r) == pytest.approx(1.0, abs=1e-6)
    assert _completeness(r) == pytest.approx(0.0, abs=1e-6)


def test_dci_known_answers(factors, identity_code, noise_code) -> None:
    cfg = _cfg(dci={"n_train": 1000, "n_test": 500}).dci
    good = compute_dci(identity_code, factors, cfg, seed=0)
    assert good["dci_disentanglement"] > 0.95 and good["dci_completeness"] > 0.95
    assert good["dci_informativeness_test"] > 0.95
    assert good["dci_n_train"] == 1000 and good["dci_n_test"] == 500 and good["dci_estimator"] == 1
    bad = compute_dci(noise_code, factors, cfg, seed=0)
    assert bad["dci_disentanglement"] < 0.1 and bad["dci_completeness"] < 0.1
    assert bad["dci_informativeness_test"] < 0.5


@pytest.mark.parametrize("estimator", ["gbt", "logistic"])
def test_dci_other_estimators(estimator: str) -> None:
    rng = np.random.default_rng(3)
    f = np.stack([rng.integers(0, 2, size=300), rng.integers(0, 3, size=300)], axis=1)
    code = np.c_[f[:, 1] * 2.0, f[:, 0] - 0.5, rng.normal(size=300) * 0.01]
    cfg = _cfg(dci={"n_train": 200, "n_test": 100, "estimator": estimator}).dci
    res = compute_dci(code, f, cfg, seed=0)
    assert res["dci_disentanglement"] > 0.8 and res["dci_completeness"] > 0.8
    assert res["dci_estimator"] == {"gbt": 0, "logistic": 2}[estimator]


# --- FactorVAE score ----------------------------------------------------------------------


def _fvae_cfg():
    return _cfg(factorvae={"n_train": 400, "n_eval": 200, "batch_size": 32, "n_variance_estimate": 1000}).factorvae


def test_factorvae_known_answers(factors, identity_code, noise_code) -> None:
    good = compute_factorvae(identity_code, factors, _fvae_cfg(), seed=0)
    assert good["factorvae_score"] == 1.0 and good["factorvae_train_accuracy"] == 1.0
    assert good["factorvae_active_dims"] == 4  # the two constant dims are pruned
    bad = compute_factorvae(noise_code, factors, _fvae_cfg(), seed=0)
    chance = 1.0 / len(SIZES)
    assert chance - 0.1 < bad["factorvae_score"] < chance + 0.15


def test_factorvae_callable_representation_matches_array(factors, identity_code) -> None:
    codes = identity_code + np.random.default_rng(5).normal(size=identity_code.shape) * 0.3
    from_array = compute_factorvae(codes, factors, _fvae_cfg(), seed=7)
    rep = image_representation(encode=lambda imgs: imgs * 1.0, read_images=lambda rows: codes[rows])
    from_fn = compute_factorvae(rep, factors, _fvae_cfg(), seed=7)
    for key in ("factorvae_score", "factorvae_train_accuracy", "factorvae_active_dims"):
        assert from_array[key] == from_fn[key]


def test_fixed_factor_sampler() -> None:
    table = np.array([[0, 0], [0, 1], [0, 2], [1, 3], [1, 3], [2, 4]])
    sampler = FixedFactorSampler(table, ["a", "b"])
    rng = np.random.default_rng(0)
    for _ in range(50):
        rows = sampler.sample(0, 2, rng)
        assert len(rows) == 2 and len(set(rows)) == 2
        assert len(set(table[rows, 0])) == 1 and table[rows[0], 0] in (0, 1)  # value 2 has one row
        rows = sampler.sample(1, 5, rng)  # only value 3 has two rows: a small batch of both
        np.testing.assert_array_equal(np.sort(rows), [3, 4])
    with pytest.raises(ValueError, match="factor 'b'"):
        FixedFactorSampler(np.array([[0, 0], [0, 1], [0, 2]]), ["a", "b"])


def test_factorvae_reports_small_batches(factors, identity_code) -> None:
    res = compute_factorvae(identity_code[:60], factors[:60], _fvae_cfg(), seed=0)
    assert res["factorvae_small_batches"] > 0 and res["factorvae_score"] > 0.9


# --- SAP ----------------------------------------------------------------------------------


def test_sap_known_answers(factors, identity_code, noise_code) -> None:
    cont = _cfg(sap={"continuous_factors": True, "n_train": 1000}).sap
    assert compute_sap(identity_code, factors, cont, seed=0)["sap"] > 0.95
    assert compute_sap(noise_code, factors, cont, seed=0)["sap"] < 0.05
    disc = _cfg(sap={"n_train": 1000, "n_test": 500}).sap
    rng = np.random.default_rng(4)
    binary = np.stack([rng.integers(0, 2, size=N) for _ in range(3)], axis=1)
    code = np.c_[binary[:, 2] * 1.5, -binary[:, 0], binary[:, 1] * 0.5, np.zeros(N)]
    good = compute_sap(code, binary, disc, seed=0)
    # discrete SAP compares test accuracies: with binary factors an uninformative dimension
    # still scores chance (0.5), so a perfect code reaches 1 - 0.5 = 0.5.
    assert good["sap"] == pytest.approx(0.5, abs=0.03)
    assert good["sap_continuous"] == 0 and good["sap_n_test"] == 500
    assert compute_sap(noise_code, binary, disc, seed=0)["sap"] < 0.05


# --- TAD ----------------------------------------------------------------------------------


def _attributes(n: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.random((n, 6)) < np.array([0.5, 0.3, 0.4, 0.5, 0.2, 0.45])
    labels = base.astype(np.int8)
    flip = rng.random(n) < 0.02
    labels[:, 5] = np.where(flip, 1 - labels[:, 3], labels[:, 3])  # attribute 5 ~ copy of 3
    return labels


def test_tad_counts_exactly_the_planted_attributes() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    labels = _attributes(n, rng)
    codes = rng.normal(size=(n, 8))
    codes[:, 1] += 3.0 * labels[:, 0]   # planted, independent attribute
    codes[:, 4] -= 3.0 * labels[:, 1]   # planted with negative sign
    codes[:, 6] += 3.0 * labels[:, 2]
    codes[:, 7] += 3.0 * labels[:, 3]   # attribute 3 has a near copy (5): never counted
    cfg = _cfg(tad={"n_images": 1500}).tad
    res = compute_tad(codes, labels, cfg, seed=0, attribute_names=list("abcdef"))
    assert res["tad_attributes"] == 3 and res["tad_attributes_std"] == 0
    assert res["tad_captured.a"] == res["tad_captured.b"] == res["tad_captured.c"] == 1.0
    assert res["tad_captured.d"] == res["tad_captured.f"] == 0.0
    # each planted attribute: best AUROC ~0.93, second ~0.5 -> difference ~0.43
    assert 3 * 0.35 < res["tad"] < 3 * 0.5
    assert res["tad_n_images"] == 1500 and res["tad_folds"] == 5

    noise = compute_tad(rng.normal(size=(n, 8)), labels, cfg, seed=0)
    assert noise["tad"] == 0.0 and noise["tad_attributes"] == 0


def test_tad_auroc_uses_either_sign() -> None:
    y = np.array([[0], [0], [1], [1]])
    z = np.array([[1.0, 0.0, 3.0], [2.0, 1.0, 3.0], [3.0, 0.0, 3.0], [4.0, 1.0, 3.0]])
    np.testing.assert_allclose(_auroc_matrix(z, y), [[1.0, 0.5, 0.5]])
    np.testing.assert_allclose(_auroc_matrix(-z, y), [[1.0, 0.5, 0.5]])


# --- config -------------------------------------------------------------------------------


def test_metrics_config_from_defaults_and_levels() -> None:
    cfg = _cfg(levels=[0.0, 0.5])
    assert cfg.tad.n_images == 10000 and cfg.tad.folds == 5 and cfg.mig.num_bins == 20
    np.testing.assert_array_equal(select_levels(np.linspace(0, 1, 5), cfg.levels), [0, 2])
    np.testing.assert_array_equal(select_levels(np.linspace(0, 1, 3), None), [0, 1, 2])
    with pytest.raises(ValueError, match="metrics.levels"):
        select_levels(np.linspace(0, 1, 4), (0.5,))
    assert cfg.to_dict()["levels"] == [0.0, 0.5]


def test_metrics_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="dci.estimator"):
        section_defaults("metrics", {"dci": {"estimator": "xgboost"}})
    with pytest.raises(ConfigError, match="tad"):
        section_defaults("metrics", {"tad": {"folds": 1}})


def test_compute_disentanglement_runs_every_applicable_metric(factors, identity_code) -> None:
    from multibeta.metrics.disentanglement import compute_disentanglement

    cfg = _cfg(dci={"n_train": 500, "n_test": 200}, sap={"n_train": 500, "n_test": 200},
               factorvae={"n_train": 100, "n_eval": 100, "n_variance_estimate": 500}, tad={"n_images": 500})
    res = compute_disentanglement(identity_code, cfg, factor_classes=factors)
    for key in ("mig", "dci_disentanglement", "factorvae_score", "sap", "mig_seed", "sap_elapsed_s", "elapsed_s"):
        assert key in res
    # factors without attributes: TAD of the factors binarised at their medians
    assert res["factorvae_score"] == 1.0 and res["tad"] > 0 and "tad_captured.factor_0>median" in res
    labels = (factors[:, :2] > 1).astype(np.int8)
    res = compute_disentanglement(identity_code, cfg, attributes=labels, attribute_names=["p", "q"])
    assert "tad" in res and "mig" not in res and res["tad_seed"] == 0
    with pytest.raises(ValueError, match="factor_classes"):
        compute_disentanglement(identity_code, cfg)


def test_tad_auroc_matrix_equals_scikit_learn_with_ties_and_constant_attributes() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    z = np.round(rng.normal(size=(300, 6)), 1)  # rounded: many ties
    y = (rng.random((300, 5)) < [0.1, 0.5, 0.9, 0.3, 0.0]).astype(np.int8)  # the last is constant
    got = _auroc_matrix(z, y)
    for i in range(4):
        for d in range(6):
            auc = roc_auc_score(y[:, i], z[:, d])
            assert got[i, d] == pytest.approx(max(auc, 1 - auc), abs=1e-12)
    assert (got[4] == 0.5).all()


def test_binary_mutual_information_equals_scikit_learn_pair_by_pair() -> None:
    from sklearn.metrics import mutual_info_score

    from multibeta.metrics.utils import binary_mutual_information

    rng = np.random.default_rng(1)
    base = rng.random((500, 1)) < 0.4
    labels = np.hstack([base, base ^ (rng.random((500, 1)) < 0.1), rng.random((500, 3)) < [0.2, 0.5, 0.97],
                        np.zeros((500, 1), bool), ~base]).astype(np.int8) * 2 - 1  # values -1/1
    got = binary_mutual_information(labels)
    for i in range(labels.shape[1]):
        for j in range(labels.shape[1]):
            assert got[i, j] == pytest.approx(mutual_info_score(labels[:, i], labels[:, j]), abs=1e-12)
    with pytest.raises(ValueError, match="column 0 is not binary"):
        binary_mutual_information(np.array([[0, 1], [1, 0], [2, 1]]))


def test_tad_from_factors_binarises_each_factor_above_its_median() -> None:
    from multibeta.metrics.tad import factor_attributes

    classes = np.array([[0, 0, 5], [1, 1, 5], [2, 2, 5], [2, 3, 5]])
    attrs, names = factor_attributes(classes, ["shape", "x", "const"])
    assert names == ["shape>median", "x>median"]  # a one-class factor is left out
    np.testing.assert_array_equal(attrs, [[0, 0], [0, 0], [1, 1], [1, 1]])
    with pytest.raises(ValueError, match="from_factors"):
        factor_attributes(classes, rule="mean")


def test_tad_from_factors_rewards_one_dimension_per_factor() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    classes = np.stack([rng.integers(0, 8, n), rng.integers(0, 8, n)], axis=1)
    aligned = classes + 0.3 * rng.standard_normal((n, 2))
    q = np.array([[1.0, 1.0], [-1.0, 1.0]]) / np.sqrt(2)
    cfg = MetricsConfig.from_section(section_defaults("metrics", {"tad": {"n_images": 2000}}))
    scores = {name: compute_disentanglement(codes, cfg, factor_classes=classes, factor_names=["a", "b"])
              for name, codes in (("aligned", aligned), ("mixed", aligned @ q))}
    assert scores["aligned"]["tad"] > 0.3 and scores["aligned"]["tad_attributes"] == 2
    assert scores["mixed"]["tad"] < 0.1  # a 45° rotation: each factor read equally by two dimensions
    off = MetricsConfig.from_section(section_defaults("metrics", {"tad": {"from_factors": "none"}}))
    assert "tad" not in compute_disentanglement(aligned, off, factor_classes=classes)
