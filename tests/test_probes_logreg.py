"""The msn logistic-regression variant vs MSN's own tool (cyanure, the `test` extra) and vs an independent
scipy solver of the same objective: preprocessing, the lambd / n_train convention, no intercept, and
predictions on a 1%-ImageNet-shaped problem."""

import warnings

import numpy as np
import pytest
import scipy.optimize
import scipy.special
import torch
from cyanure.data_processing import preprocess as cyanure_preprocess
from cyanure.estimators import Classifier

from ijepa_eval.errors import ConfigError
from ijepa_eval.probes import evaluate_logreg, fit_logreg
from ijepa_eval.probes.logreg import preprocess
from ijepa_eval.protocols.probing import LogRegProbe
from ijepa_eval.protocols.recipes import load_recipe


def cyanure_msn(x: np.ndarray, y: np.ndarray, lambd: float, **overrides) -> Classifier:
    """MSN logistic_eval.py's call in cyanure >= 1.0 names (``max_epochs`` -> ``max_iter``, ``it0`` ->
    ``duality_gap_interval``); ``x`` is preprocessed in place as MSN does."""
    cyanure_preprocess(x, normalize=True, columns=False, centering=True)
    args = dict(loss="multiclass-logistic", penalty="l2", fit_intercept=False, lambda_1=lambd / len(x),
                lambda_2=lambd / len(x), tol=1e-3, solver="auto", random_state=0, max_iter=300,
                duality_gap_interval=10, n_threads=-1, verbose=False) | overrides
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float32 "numerical instability" and max_iter notes
        return Classifier(**args).fit(x, y)


def blobs(n: int, dim: int, classes: int, noise: float, seed: int = 0, offset: float = 0.5):
    """Gaussian class blobs off the origin (so per-sample centring matters), float32 like MSN's features."""
    g = np.random.default_rng(seed)
    centers = g.normal(size=(classes, dim)).astype(np.float32)
    y = np.arange(n) % classes
    x = centers[y] + noise * g.normal(size=(n, dim)).astype(np.float32) + offset
    return x, y


def test_msn_preprocess_equals_cyanure_preprocess_on_any_set():
    x, _ = blobs(50, 24, 5, 1.0)
    ref = x.copy()
    cyanure_preprocess(ref, normalize=True, columns=False, centering=True)
    ours = preprocess(torch.from_numpy(x), "msn")
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)
    # per sample: a row's result does not depend on the other rows (test features need no train stats)
    np.testing.assert_allclose(preprocess(torch.from_numpy(x[:3]), "msn").numpy(), ref[:3], atol=1e-6)


def scipy_msn_logreg(x: np.ndarray, y: np.ndarray, classes: int, lambd: float) -> np.ndarray:
    """The objective written out in numpy: mean softmax cross-entropy of (centred, L2-normalised x) @ W
    plus (lambd / n) / 2 ||W||^2, no intercept; minimised by scipy's L-BFGS-B."""
    xc = x.astype(np.float64) - x.mean(1, keepdims=True)
    xn = xc / np.linalg.norm(xc, axis=1, keepdims=True)
    n, d = xn.shape
    lam, onehot = lambd / n, np.eye(classes)[y]

    def objective(flat):
        w = flat.reshape(d, classes)
        logp = scipy.special.log_softmax(xn @ w, axis=1)
        loss = -logp[np.arange(n), y].mean() + 0.5 * lam * (w**2).sum()
        grad = xn.T @ (np.exp(logp) - onehot) / n + lam * w
        return loss, grad.ravel()

    res = scipy.optimize.minimize(objective, np.zeros(d * classes), jac=True, method="L-BFGS-B",
                                  options={"maxiter": 10000, "gtol": 1e-12, "ftol": 1e-16})
    return res.x.reshape(d, classes)


def test_msn_variant_minimises_the_cyanure_objective_scipy_independent():
    x, y = blobs(240, 16, 6, 2.0)
    model = fit_logreg(torch.from_numpy(x), torch.from_numpy(y), 6, 0.5)
    w = scipy_msn_logreg(x, y, 6, 0.5)
    assert model.bias is None and model.lam == pytest.approx(0.5 / 240)
    np.testing.assert_allclose(model.weight.numpy(), w, atol=2e-5)


def test_msn_variant_equals_a_tightly_converged_cyanure():
    """Same weights as cyanure's solver run to a 1e-10 duality gap: the lambd / n_train convention and the
    absent intercept are cyanure's."""
    x, y = blobs(300, 32, 5, 2.0)
    ref = cyanure_msn(x.astype(np.float64), y, 2.0, tol=1e-10, max_iter=10000)
    model = fit_logreg(torch.from_numpy(x), torch.from_numpy(y), 5, 2.0)
    np.testing.assert_allclose(model.weight.numpy(), ref.coef_, atol=1e-4)  # |W| ~ 2
    with pytest.raises(ConfigError, match="variant 'cyanure' is unknown"):
        fit_logreg(torch.from_numpy(x), torch.from_numpy(y), 5, 2.0, variant="cyanure")


@pytest.mark.slow
@pytest.mark.parametrize("lambd", [0.025])
def test_msn_variant_predicts_as_cyanure_on_a_1pct_imagenet_shaped_problem(lambd):
    """1000 classes x 12-13 examples (189 x 12 + 811 x 13, the SimCLR 1% split), 256 dims, hard enough that
    test accuracy is far from 0 and 100%. cyanure with MSN's exact call vs our L-BFGS: >= 99.5% identical
    test predictions, and the same test accuracy to 0.5 points."""
    g = np.random.default_rng(0)
    classes, dim, noise = 1000, 256, 4.0
    centers = g.normal(size=(classes, dim)).astype(np.float32)
    per_class = np.array([12] * 189 + [13] * 811)
    g.shuffle(per_class)
    y = np.repeat(np.arange(classes), per_class)
    x = centers[y] + noise * g.normal(size=(len(y), dim)).astype(np.float32) + 0.5
    y_test = g.integers(0, classes, 2000)
    x_test = centers[y_test] + noise * g.normal(size=(2000, dim)).astype(np.float32) + 0.5

    model = fit_logreg(torch.from_numpy(x), torch.from_numpy(y), classes, lambd)
    ours = model.logits(torch.from_numpy(x_test)).argmax(1).numpy()
    ref = cyanure_msn(x.copy(), y, lambd)
    x_ref = x_test.copy()
    cyanure_preprocess(x_ref, normalize=True, columns=False, centering=True)
    theirs = ref.predict(x_ref)

    assert (ours == theirs).mean() >= 0.995
    top1 = evaluate_logreg([model], torch.from_numpy(x_test), torch.from_numpy(y_test), classes)[0]["top1"]
    assert 10 < top1 < 90
    assert top1 == pytest.approx(100 * (theirs == y_test).mean(), abs=0.5)


def test_recipe_defaults_to_msn_with_its_published_lambdas_and_passes_the_variant_on():
    recipe = load_recipe("in1k_1pct_logreg")
    assert recipe.logreg.variant == "msn" and {0.0025, 0.00025} <= set(recipe.logreg.lambdas)
    with pytest.raises(ConfigError, match="logreg.variant"):
        load_recipe("in1k_1pct_logreg", ["logreg.variant=cyanure"])
    x, y = blobs(60, 8, 3, 1.0)
    for variant in ("msn", "sklearn"):
        sweep = load_recipe("in1k_1pct_logreg", [f"logreg.variant={variant}", "logreg.lambdas=[1.0]"])
        probe = LogRegProbe(sweep, ["last"], 3, torch.device("cpu"), progress=False)
        probe.fit({"last": torch.from_numpy(x)}, y, np.arange(60))
        assert probe.heads[0]["variant"] == probe.models[0].variant == variant
        assert (probe.models[0].bias is None) == (variant == "msn")
