"""Probes vs independent computations: torch.optim reference loops, scikit-learn, brute-force numpy."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from ijepa_eval.errors import ConfigError
from ijepa_eval.probes import (
    LinearTrainConfig,
    OptimizerConfig,
    ScheduleConfig,
    class_balanced_holdout,
    evaluate_grid,
    evaluate_logreg,
    few_shot_rows,
    fit_linear_grid,
    fit_logreg,
    head_grid,
    knn_scores,
    knn_topk,
    scores_from_topk,
    select_head,
)
from ijepa_eval.probes import knn as knn_module
from ijepa_eval.probes.linear import init_linear, iterate_batches, lr_at


def blobs(n=240, dim=16, classes=4, seed=0, spread=3.0):
    """Gaussian class blobs: linearly separable up to a little overlap."""
    g = np.random.default_rng(seed)
    centers = g.normal(size=(classes, dim)) * spread
    y = g.integers(0, classes, n)
    x = centers[y] + g.normal(size=(n, dim))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def features_of(x):
    """Two representations like lastPOOL / concatPOOL4: the first is the last columns of the second."""
    return {"concat": x, "last": x[:, -8:]}


def cfg(opt="sgd", epochs=6, bs=32, nesterov=True, schedule=None):
    return LinearTrainConfig(OptimizerConfig(opt, base_lr=0.05, base_batch=bs, nesterov=nesterov),
                             schedule or ScheduleConfig("step", milestones=[3, 5]), epochs=epochs, batch_size=bs)


def test_grid_best_head_matches_sklearn_logistic_regression():
    x, y = blobs(400, classes=5, spread=0.8)
    train, test = np.arange(0, 300), np.arange(300, 400)
    specs = head_grid(["concat", "last"], ["bn_linear", "linear"], [1, 0.1], [5e-4, 0])
    grid, _ = fit_linear_grid(features_of(x), y, specs, cfg(epochs=30), 5, index=torch.tensor(train),
                              progress=False)
    scores = evaluate_grid(grid, features_of(x), y, index=torch.tensor(test))
    best = max(s["top1"] for s in scores)
    sk = LogisticRegression(max_iter=2000).fit(x[train].numpy(), y[train].numpy())
    sk_acc = 100 * (sk.predict(x[test].numpy()) == y[test].numpy()).mean()
    assert 85 < sk_acc < 100, "overlapping classes, so the accuracies say something"
    assert best >= sk_acc - 1.0


@pytest.mark.parametrize("opt", ["sgd", "lars"])
def test_heads_trained_jointly_equal_heads_trained_alone(opt):
    x, y = blobs()
    specs = head_grid(["concat", "last"], ["bn_linear", "linear"], [1, 0.1], [5e-4, 0])
    schedule = ScheduleConfig("cosine", final_lr=1e-3, warmup_epochs=1)
    grid, stats = fit_linear_grid(features_of(x), y, specs, cfg(opt, schedule=schedule), 4, seed=3,
                                  progress=False)
    joint = grid.logits(features_of(x))
    for i, spec in enumerate(specs):
        alone, alone_stats = fit_linear_grid(features_of(x), y, [spec], cfg(opt, schedule=schedule), 4, seed=3,
                                             progress=False)
        torch.testing.assert_close(alone.logits(features_of(x))[0], joint[i], atol=1e-5, rtol=1e-5)
        assert alone_stats[0]["loss"] == pytest.approx(stats[i]["loss"], abs=1e-5)


def vissl_head(head: str, dim: int, classes: int, seed: int) -> torch.nn.Sequential:
    """VISSL's ``eval_mlp`` (BatchNorm eps 1e-5, momentum 0.1, affine; then Linear) or ``mlp`` (Linear),
    with the Linear initialised as the grid documents (nn.Linear's U(±1/√F), drawn from ``seed``)."""
    lin = torch.nn.Linear(dim, classes)
    weight, bias = init_linear(dim, classes, seed)
    with torch.no_grad():
        lin.weight.copy_(weight.T)
        lin.bias.copy_(bias)
    bn = torch.nn.BatchNorm1d(dim, eps=1e-5, momentum=0.1) if head == "bn_linear" else torch.nn.Identity()
    return torch.nn.Sequential(bn, lin)


def vissl_param_groups(model: torch.nn.Sequential, wd: float, regularize_bias: bool = True) -> list[dict]:
    """VISSL's get_optimizer_param_groups: BN params unregularized (regularize_bn False), Linear weight
    regularized, Linear bias regularized when regularize_bias."""
    bn, lin = model
    groups = [{"params": [lin.weight], "weight_decay": wd},
              {"params": [lin.bias], "weight_decay": wd if regularize_bias else 0.0}]
    if isinstance(bn, torch.nn.BatchNorm1d):
        groups.append({"params": [bn.weight, bn.bias], "weight_decay": 0.0})
    return groups


@pytest.mark.parametrize("head", ["bn_linear", "linear"])
def test_one_head_equals_torch_optim_sgd_reference(head):
    """The vectorised step is torch.optim.SGD (nesterov, VISSL's param groups) + MultiStepLR on VISSL's heads."""
    x, y = blobs(100)
    spec = head_grid(["concat"], [head], [0.1], [5e-4])[0]
    c = cfg(epochs=4, bs=32)
    grid, _ = fit_linear_grid({"concat": x}, y, [spec], c, 4, seed=7, progress=False)

    g = torch.Generator().manual_seed(7)
    model = vissl_head(head, 16, 4, seed=7)
    opt = torch.optim.SGD(vissl_param_groups(model, 5e-4), lr=0.05 * 0.1, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3 * 4, 5 * 4], gamma=0.1)  # 4 steps/epoch
    for _ in range(4):
        for rows in torch.randperm(100, generator=g).split(32):  # 32, 32, 32, 4
            opt.zero_grad()
            F.cross_entropy(model(x[rows]), y[rows]).backward()
            opt.step()
            sched.step()
    model.eval()
    torch.testing.assert_close(grid.logits({"concat": x})[0], model(x).detach(), atol=1e-5, rtol=1e-5)
    if head == "bn_linear":  # the affine was learned, not left at (1, 0)
        assert (model[0].weight - 1).abs().max() > 1e-3 and model[0].bias.abs().max() > 1e-3


def test_lars_trust_ratio_is_per_head():
    """Scaling one head's features scales only that head's LARS update, never its neighbours'."""
    x, y = blobs(64)
    specs = head_grid(["a", "b"], ["linear"], [1], [0])
    c = cfg("lars", epochs=2)
    both, _ = fit_linear_grid({"a": x, "b": x * 100}, y, specs, c, 4, progress=False)
    alone, _ = fit_linear_grid({"a": x}, y, specs[:1], c, 4, progress=False)
    torch.testing.assert_close(both.logits({"a": x, "b": x * 100})[0], alone.logits({"a": x})[0])


def test_schedules():
    c = LinearTrainConfig(OptimizerConfig(base_lr=1.0), ScheduleConfig("step", milestones=[2, 4], gamma=0.1),
                          epochs=6, batch_size=256)
    assert [lr_at(c, s, 10) for s in (0, 19, 20, 40, 59)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])
    c = LinearTrainConfig(OptimizerConfig(base_lr=0.01), ScheduleConfig("cosine", final_lr=1e-4), epochs=5)
    assert lr_at(c, 0, 10) == pytest.approx(0.01) and lr_at(c, 50, 10) == pytest.approx(1e-4)
    c.schedule.warmup_epochs = 1
    assert lr_at(c, 4, 10) == pytest.approx(0.005)


def test_bad_choices_raise_config_errors():
    with pytest.raises(ConfigError, match="unknown optimizer 'adam'"):
        LinearTrainConfig(OptimizerConfig("adam"))
    with pytest.raises(ConfigError, match="Did you mean 'linear'"):
        head_grid(["r"], ["linera"], [1], [0])
    with pytest.raises(ConfigError, match="unknown representation"):
        fit_linear_grid({"r": torch.zeros(4, 2)}, torch.zeros(4, dtype=torch.int64),
                        head_grid(["q"], ["linear"], [1], [0]), cfg(), 2, progress=False)


def test_scores_from_topk_by_hand():
    labels = torch.tensor([0, 0, 1, 2])
    topk = torch.tensor([[[0, 1], [1, 0], [1, 2], [0, 2]]])  # top1 hits: yes, no, yes, no; top2: all but none
    s = scores_from_topk(topk, labels, 3)[0]
    assert s["top1"] == 50 and s["top5"] == 100
    assert s["mean_per_class_acc"] == pytest.approx(100 * (0.5 + 1 + 0) / 3)


def test_holdout_is_class_balanced_seeded_and_disjoint():
    labels = np.repeat(np.arange(5), [10, 20, 30, 1, 13])
    train, hold = class_balanced_holdout(labels, 0.1, seed=0)
    assert np.intersect1d(train, hold).size == 0 and len(train) + len(hold) == len(labels)
    assert np.bincount(labels[hold], minlength=5).tolist() == [1, 2, 3, 0, 1]
    assert np.array_equal(hold, class_balanced_holdout(labels, 0.1, seed=0)[1])
    assert not np.array_equal(hold, class_balanced_holdout(labels, 0.1, seed=1)[1])
    assert np.bincount(labels[few_shot_rows(labels, 2, seed=0)]).tolist() == [2, 2, 2, 1, 2]
    with pytest.raises(ConfigError):
        class_balanced_holdout(labels, 1.5)


def test_select_head_picks_first_best():
    scores = [{"top1": 50.0}, {"top1": 70.0}, {"top1": 70.0}]
    assert select_head(scores) == 1
    assert select_head([{"loss": 2.0}, {"loss": 1.0}], "loss", higher_is_better=False) == 1
    with pytest.raises(ConfigError, match="not scored"):
        select_head(scores, "top5")


def test_logreg_sklearn_variant_matches_sklearn_multinomial():
    x, y = blobs(120, dim=8, classes=3, spread=1.0)
    C = 0.5
    model = fit_logreg(x, y, 3, 1 / C, variant="sklearn")  # lambd (cyanure units) = sklearn's 1 / C
    xn = F.normalize(x.double() - x.double().mean(0), dim=1).numpy()
    sk = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(xn, y.numpy())
    np.testing.assert_allclose(model.probabilities(x).numpy(), sk.predict_proba(xn), atol=1e-5)
    # sklearn's multinomial coefficients are identifiable up to a per-feature constant: compare centered
    w = model.weight.numpy().T
    np.testing.assert_allclose(w - w.mean(0), sk.coef_ - sk.coef_.mean(0), atol=1e-4)
    acc = evaluate_logreg([model], x, y, 3)[0]["top1"]
    assert acc == pytest.approx(100 * (sk.predict(xn) == y.numpy()).mean())


def brute_force_knn(train, train_y, test, k, T, classes):
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    sims = b @ a.T
    pred = []
    for row in sims:
        nn = np.argsort(-row)[:k]
        votes = np.zeros(classes)
        for j in nn:
            votes[train_y[j]] += np.exp(row[j] / T)
        pred.append(np.argmax(votes))
    return np.array(pred)


def test_knn_equals_brute_force_numpy():
    x, y = blobs(150, dim=8, classes=5, spread=0.7)
    tr, te = x[:100].numpy().astype(np.float64), x[100:].numpy().astype(np.float64)
    ks = [1, 10, 20, 200]  # 200 > N_train: clamped to all 100 neighbours
    scores = knn_scores(x[:100], y[:100].numpy(), x[100:], y[100:].numpy(), ks, 5, temperature=0.07)
    topk = knn_topk(x[:100], y[:100].numpy(), x[100:], ks, 5, temperature=0.07)
    for k, s, predicted in zip(ks, scores, topk, strict=True):
        pred = brute_force_knn(tr, y[:100].numpy(), te, min(k, 100), 0.07, 5)
        np.testing.assert_array_equal(predicted[:, 0].numpy(), pred)
        assert s["top1"] == pytest.approx(100 * (pred == y[100:].numpy()).mean())
    assert 0 < scores[1]["top1"] < 100
    assert scores[0]["top1"] != scores[3]["top1"]


def test_knn_leaves_the_callers_features_untouched(monkeypatch):
    """Normalising for cosine search must not rescale the caller's (float32, contiguous) tensors or arrays."""
    monkeypatch.setattr(knn_module, "ADD_ROWS", 16)  # several chunks on the way into the index
    x, y = blobs(60, dim=8, classes=3)
    train, query = x[:40].clone(), x[40:].numpy().copy()
    knn_scores(train, y[:40].numpy(), query, y[40:].numpy(), [5], 3)
    assert torch.equal(train, x[:40]) and np.array_equal(query, x[40:].numpy())


@pytest.mark.parametrize(("head", "regularize_bias"), [("bn_linear", True), ("linear", True), ("linear", False)])
def test_one_head_equals_reference_lars_loop(head, regularize_bias):
    """VISSL's _LARS (exclude_bias_and_norm): every param gets its group's wd, then 2-D params are scaled by
    eta*||p||/||g + wd*p||, 1-D params (bias, BN γ/β) are not; plain momentum. regularize_bias=False is
    MAE's LARS: no wd on 1-D params either."""
    x, y = blobs(96)
    spec = head_grid(["concat"], [head], [1.0], [5e-4])[0]
    c = LinearTrainConfig(OptimizerConfig("lars", base_lr=2.0, base_batch=32, momentum=0.9, trust_coefficient=0.01,
                                          regularize_bias=regularize_bias),
                          ScheduleConfig("step", milestones=[2]), epochs=3, batch_size=32)
    grid, _ = fit_linear_grid({"concat": x}, y, [spec], c, 4, seed=5, progress=False)

    model = vissl_head(head, 16, 4, seed=5)
    groups = vissl_param_groups(model, 5e-4, regularize_bias)
    mu = {id(p): torch.zeros_like(p) for grp in groups for p in grp["params"]}
    g = torch.Generator().manual_seed(5)
    for epoch in range(3):
        lr = 2.0 * (0.1 if epoch >= 2 else 1.0)
        for rows in torch.randperm(96, generator=g).split(32):
            model.zero_grad()
            F.cross_entropy(model(x[rows]), y[rows]).backward()
            with torch.no_grad():
                for grp in groups:
                    for p in grp["params"]:
                        dp = p.grad + grp["weight_decay"] * p
                        if p.ndim > 1:
                            dp = dp * (0.01 * p.norm() / dp.norm())
                        mu[id(p)].mul_(0.9).add_(dp)
                        p -= lr * mu[id(p)]
    model.eval()
    torch.testing.assert_close(grid.logits({"concat": x})[0], model(x).detach(), atol=1e-5, rtol=1e-5)


def test_lr_follows_the_batch_size_and_epoch_interval_cosine():
    """lr = base_lr * batch / base_batch (VISSL auto_scale, MAE blr), cosine end value scaled alike
    (VISSL get_scaled_lr_scheduler); update_interval 'epoch' holds the lr for a whole epoch."""
    c = LinearTrainConfig(OptimizerConfig("lars", base_lr=0.1, base_batch=256), ScheduleConfig("step", [15]),
                          epochs=50, batch_size=16384)
    assert c.lr == pytest.approx(6.4) and c.lr_record() == {"base_lr": 0.1, "base_batch": 256,
                                                            "effective_lr": pytest.approx(6.4)}
    cos = ScheduleConfig("cosine", final_lr=1e-4, update_interval="epoch")
    c = LinearTrainConfig(OptimizerConfig(base_lr=0.01), cos, epochs=50, batch_size=512)
    assert c.lr == pytest.approx(0.02)
    # ClassyVision/fvcore cosine at where = epoch / epochs: end + (start - end) * (1 + cos(pi * where)) / 2
    for epoch in (0, 1, 25, 49):
        expected = 2e-4 + (0.02 - 2e-4) * (1 + np.cos(np.pi * epoch / 50)) / 2
        assert lr_at(c, epoch * 10, 10) == pytest.approx(expected) == pytest.approx(lr_at(c, epoch * 10 + 9, 10))
    with pytest.raises(ConfigError, match="base_batch"):
        LinearTrainConfig(OptimizerConfig(base_batch=0))


def test_row_index_moves_once_per_pass_not_per_batch(monkeypatch):
    """On CUDA a blocking host->device copy synchronises the stream: one per batch stalls every step."""
    x, y = blobs(640)
    spec = head_grid(["a"], ["linear"], [1], [0])
    grid, _ = fit_linear_grid({"a": x}, y, spec, cfg(epochs=1), 4, progress=False)
    moved = []
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if self.dtype == torch.int64:  # row indices and labels
            moved.append(self.shape)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)

    def transfers(n: int) -> int:
        moved.clear()
        list(iterate_batches({"a": x[:n]}, y[:n], torch.arange(n), 32))
        evaluate_grid(grid, {"a": x[:n]}, y[:n], batch_size=32)
        return len(moved)

    assert transfers(64) == transfers(640)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_steps_do_not_sync_the_host():
    """The number of host-device syncs of a fit does not grow with the number of batches."""
    specs = head_grid(["concat", "last"], ["bn_linear", "linear"], [1, 0.1], [5e-4, 0])

    def syncs(n: int) -> int:
        x, y = blobs(n)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fit_linear_grid(features_of(x), y, specs, cfg("lars", epochs=2), 4, device="cuda", progress=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(64) == syncs(640)
