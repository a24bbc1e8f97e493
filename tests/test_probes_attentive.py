"""The attentive probe against an independent implementation of V-JEPA's equations and key layout.

``Ref*`` below re-derives facebookresearch/jepa's ``AttentiveClassifier`` (and vjepa2's pooler) from its
equations: explicit softmax attention, the k-then-v row layout of ``xattn.kv``, V-JEPA's truncated-normal
helper written out (inverse CDF of a uniform draw), its module creation order and ``_rescale_blocks``.
``RefSchedules`` are V-JEPA's stateful ``WarmupCosineSchedule`` / ``CosineWDSchedule`` (counter incremented
before use), stepped by a copy of its eval loop. Nothing here needs the fetched repositories.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ijepa_eval.errors import CheckpointError, ConfigError
from ijepa_eval.probes.attentive import AttentiveClassifier, load_vjepa_probes, probe_config, vjepa_checkpoint
from ijepa_eval.probes.attentive_grid import (
    AttentiveGrid,
    AttentiveSpec,
    build_probe,
    fit_on_tokens,
    predict_tokens,
)
from ijepa_eval.schedules import cosine_wd, warmup_cosine_lr

D, HEADS, CLASSES = 32, 4, 5


def ref_trunc_normal_(t: torch.Tensor, std: float = 0.02, a: float = -2.0, b: float = 2.0) -> torch.Tensor:
    """V-JEPA's src/utils/tensors.py trunc_normal_: uniform in CDF space, inverse CDF, clamp (bounds absolute)."""
    def cdf(x):
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0
    with torch.no_grad():
        t.uniform_(2 * cdf(a / std) - 1, 2 * cdf(b / std) - 1).erfinv_().mul_(std * math.sqrt(2.0)).clamp_(a, b)
    return t


class RefMLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def ref_attention(q, k, v):
    """[B, H, n, d] x [B, H, N, d] -> [B, n, H*d]: softmax(q k^T / sqrt(d)) v, heads concatenated."""
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    out = weights @ v
    return out.permute(0, 2, 1, 3).flatten(2)


def heads(x, h):
    """[B, N, C] -> [B, H, N, C/H]: head j holds channels j*C/H ... (j+1)*C/H - 1."""
    return x.unflatten(-1, (h, -1)).permute(0, 2, 1, 3)


class RefCrossAttention(nn.Module):
    def __init__(self, dim, h, with_proj):
        super().__init__()
        self.h = h
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        if with_proj:
            self.proj = nn.Linear(dim, dim)

    def forward(self, q, x):
        kv = self.kv(x)
        k, v = kv[..., : q.shape[-1]], kv[..., q.shape[-1]:]  # rows 0..D-1 make k, D..2D-1 make v
        return ref_attention(heads(self.q(q), self.h), heads(k, self.h), heads(v, self.h))  # no proj


class RefSelfAttention(nn.Module):
    def __init__(self, dim, h):
        super().__init__()
        self.h = h
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(ref_attention(heads(q, self.h), heads(k, self.h), heads(v, self.h)))


class RefBlock(nn.Module):
    def __init__(self, dim, h):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), RefSelfAttention(dim, h)
        self.norm2, self.mlp = nn.LayerNorm(dim), RefMLP(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefCrossBlock(nn.Module):
    def __init__(self, dim, h, with_proj):
        super().__init__()
        self.norm1, self.xattn = nn.LayerNorm(dim), RefCrossAttention(dim, h, with_proj)
        self.norm2, self.mlp = nn.LayerNorm(dim), RefMLP(dim, 4 * dim)

    def forward(self, q, x):
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class RefPooler(nn.Module):
    def __init__(self, dim, h, depth, v2):
        super().__init__()
        self.v2 = v2
        self.query_tokens = nn.Parameter(torch.zeros(1, 1, dim))
        self.cross_attention_block = RefCrossBlock(dim, h, with_proj=not v2)
        self.blocks = nn.ModuleList(RefBlock(dim, h) for _ in range(depth - 1)) if depth > 1 else None
        ref_trunc_normal_(self.query_tokens)
        for m in self.modules():  # children before parents, as nn.Module.apply visits them
            if isinstance(m, nn.Linear):
                ref_trunc_normal_(m.weight)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0)
        blocks = list(self.blocks or [])
        with torch.no_grad():
            if not v2:  # jepa: cross block layer id 1, blocks layer ids 2, 3, ...
                self.cross_attention_block.xattn.proj.weight /= math.sqrt(2.0)
                self.cross_attention_block.mlp.fc2.weight /= math.sqrt(2.0)
                for i, blk in enumerate(blocks):
                    blk.attn.proj.weight /= math.sqrt(2.0 * (i + 2))
                    blk.mlp.fc2.weight /= math.sqrt(2.0 * (i + 2))
            else:  # vjepa2: blocks layer ids 1, 2, ...; the cross block takes the last one (1 without blocks)
                for i, blk in enumerate(blocks):
                    blk.attn.proj.weight /= math.sqrt(2.0 * (i + 1))
                    blk.mlp.fc2.weight /= math.sqrt(2.0 * (i + 1))
                self.cross_attention_block.mlp.fc2.weight /= math.sqrt(2.0 * max(1, len(blocks)))

    def forward(self, x):
        blocks = list(self.blocks or [])
        for blk in blocks if self.v2 else []:
            x = blk(x)
        q = self.cross_attention_block(self.query_tokens.repeat(len(x), 1, 1), x)
        for blk in [] if self.v2 else blocks:
            q = blk(q)
        return q


class RefClassifier(nn.Module):
    def __init__(self, dim=D, h=HEADS, classes=CLASSES, depth=1, v2=False):
        super().__init__()
        self.pooler = RefPooler(dim, h, depth, v2)
        self.linear = nn.Linear(dim, classes)

    def forward(self, x):
        return self.linear(self.pooler(x).squeeze(1))


class DDPLike(nn.Module):
    """What V-JEPA's eval saves and loads: the classifier inside DistributedDataParallel (keys ``module.*``)."""

    def __init__(self, module):
        super().__init__()
        self.module = module


VARIANTS = [("vjepa", 1), ("vjepa", 3), ("vjepa2", 1), ("vjepa2", 4)]


def tokens(b=6, n=10, seed=1):
    return torch.randn(b, n, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant,depth", VARIANTS)
def test_same_seed_gives_vjepas_weights_keys_and_shapes(variant, depth):
    torch.manual_seed(7)
    ref = RefClassifier(depth=depth, v2=variant == "vjepa2")
    ours = build_probe(AttentiveSpec(variant=variant, depth=depth), D, HEADS, CLASSES, seed=7)
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert list(our_state) == list(ref_state)  # same keys, same order
    for key, value in ref_state.items():
        assert torch.equal(our_state[key], value), key
    assert ("pooler.cross_attention_block.xattn.proj.weight" in our_state) == (variant == "vjepa")
    assert our_state["pooler.cross_attention_block.xattn.kv.weight"].shape == (2 * D, D)


def test_init_statistics_show_the_rescale():
    """Large dims: fc2 and proj at 0.02/sqrt(2), q at 0.02, LayerNorms 1/0, the query token at 0.02."""
    probe = AttentiveClassifier(512, 8, 10)
    cab = probe.pooler.cross_attention_block
    assert cab.xattn.q.weight.std().item() == pytest.approx(0.02, rel=0.01)
    assert cab.mlp.fc2.weight.std().item() == pytest.approx(0.02 / math.sqrt(2), rel=0.01)
    assert cab.xattn.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(2), rel=0.01)
    assert torch.equal(cab.norm1.weight, torch.ones(512)) and not cab.xattn.kv.bias.any()


@pytest.mark.parametrize("variant,depth", VARIANTS)
def test_our_checkpoint_gives_the_same_logits_in_vjepas_class(variant, depth):
    ours = AttentiveClassifier(D, HEADS, CLASSES, depth=depth, variant=variant)
    with torch.no_grad():  # trained-looking weights: nothing left at its init value
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    blob = vjepa_checkpoint([ours], epoch=20, batch_size=16, world_size=64, lr=1e-3)
    ref = DDPLike(RefClassifier(depth=depth, v2=variant == "vjepa2"))
    # strict, as the load_checkpoint of V-JEPA (one probe) and of V-JEPA 2 (a list, one per grid member)
    ref.load_state_dict(blob["classifier"] if variant == "vjepa" else blob["classifiers"][0])
    x = tokens()
    torch.testing.assert_close(ours(x), ref.module(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant,depth", VARIANTS)
def test_a_vjepa_checkpoint_loads_with_module_prefixes(variant, depth, tmp_path):
    refs = [RefClassifier(depth=depth, v2=variant == "vjepa2") for _ in range(2)]
    states = [DDPLike(r).state_dict() for r in refs]
    blob = {"classifiers": states} if variant == "vjepa2" else {"classifier": states[0], "epoch": 20}
    torch.save(blob, tmp_path / "latest.pt")
    loaded = load_vjepa_probes(torch.load(tmp_path / "latest.pt", weights_only=True), num_heads=HEADS)
    assert len(loaded) == len(blob.get("classifiers", [None]))
    assert loaded[0].config == {"embed_dim": D, "num_heads": HEADS, "num_classes": CLASSES, "depth": depth,
                                "mlp_ratio": 4.0, "qkv_bias": True, "variant": variant}
    x = tokens()
    for ours, ref in zip(loaded, refs, strict=False):
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_the_output_projection_is_held_but_not_applied():
    probe = AttentiveClassifier(D, HEADS, CLASSES)
    x = tokens()
    before = probe(x)
    with torch.no_grad():
        probe.pooler.cross_attention_block.xattn.proj.weight.normal_()
    assert torch.equal(probe(x), before)


def test_bad_probe_inputs_raise_one_line_errors():
    with pytest.raises(ConfigError, match="does not split into 5 heads"):
        AttentiveClassifier(32, 5, 10)
    with pytest.raises(ConfigError, match="unknown attentive probe variant 'vjepa3'"):
        AttentiveClassifier(32, 4, 10, variant="vjepa3")
    with pytest.raises(CheckpointError, match="not an attentive probe state dict"):
        probe_config({"module.linear.weight": torch.zeros(3, 4)}, num_heads=4)
    state = AttentiveClassifier(D, HEADS, CLASSES).state_dict()
    state["pooler.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_vjepa_probes(state, num_heads=HEADS)


# -- optimisation: V-JEPA's eval loop, written out --------------------------------------------------------

class RefWarmupCosine:
    """V-JEPA WarmupCosineSchedule: counter incremented before use, all groups set."""

    def __init__(self, opt, warmup_steps, start_lr, ref_lr, T_max, final_lr=0.0):
        self.opt, self.start, self.ref, self.final = opt, start_lr, ref_lr, final_lr
        self.warmup, self.T, self.count = warmup_steps, T_max - warmup_steps, 0.0

    def step(self):
        self.count += 1
        if self.count < self.warmup:
            lr = self.start + float(self.count) / float(max(1, self.warmup)) * (self.ref - self.start)
        else:
            progress = float(self.count - self.warmup) / float(max(1, self.T))
            lr = max(self.final, self.final + (self.ref - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress)))
        for g in self.opt.param_groups:
            g["lr"] = lr


class RefCosineWD:
    """V-JEPA CosineWDSchedule: groups marked WD_exclude keep their 0."""

    def __init__(self, opt, ref_wd, T_max, final_wd=0.0):
        self.opt, self.ref, self.final, self.T, self.count = opt, ref_wd, final_wd, T_max, 0.0

    def step(self):
        self.count += 1
        wd = self.final + (self.ref - self.final) * 0.5 * (1.0 + math.cos(math.pi * self.count / self.T))
        wd = max(self.final, wd) if self.final <= self.ref else min(self.final, wd)
        for g in self.opt.param_groups:
            if not g.get("WD_exclude", False):
                g["weight_decay"] = wd


def vjepa_groups(model, exclude=True):
    if not exclude:
        return [{"params": list(model.parameters())}]
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if "bias" not in n and p.ndim != 1]},
            {"params": [p for n, p in named if "bias" in n or p.ndim == 1], "WD_exclude": True, "weight_decay": 0}]


def separable(n=40, seed=0):
    """Tokens whose mean carries the class: a task a probe learns in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    centers = torch.randn(CLASSES, D, generator=g) * 2
    return torch.randn(n, 9, D, generator=g) + centers[y][:, None], y


@pytest.mark.parametrize("variant,spec", [
    ("vjepa", {}),  # V-JEPA's recipe: lr 1e-3 constant start, cosine to 0; wd 1e-3 -> 1e-6; clip 1.0
    ("vjepa2", {"depth": 2, "lrs": [2e-3], "wds": [4e-3], "start_lr": 2e-4, "warmup_epochs": 1.0, "final_wd": None,
                "exclude_bias_and_norm": False, "clip_grad": None}),  # a V-JEPA 2 grid member
])
def test_schedules_and_updates_equal_vjepas_eval_loop_at_every_step(variant, spec):
    x, y = separable()
    spec = AttentiveSpec(variant=variant, base_batch=8, **spec)
    epochs, batch = 3, 8
    steps = -(-len(y) // batch)
    grid = AttentiveGrid(spec, D, HEADS, CLASSES, batch_size=batch, steps_per_epoch=steps, epochs=epochs, seed=3)
    torch.manual_seed(3)
    ref = RefClassifier(depth=spec.depth, v2=variant == "vjepa2")
    opt = torch.optim.AdamW(vjepa_groups(ref, spec.exclude_bias_and_norm))
    final_wd = spec.final_wd if spec.final_wd is not None else spec.wds[0]
    lr_s = RefWarmupCosine(opt, int(spec.warmup_epochs * steps), spec.start_lr or spec.lrs[0], spec.lrs[0],
                           epochs * steps, spec.final_lr)
    wd_s = RefCosineWD(opt, spec.wds[0], epochs * steps, final_wd)
    for _ in range(epochs):
        for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
            lr_s.step()
            wd_s.step()
            loss = F.cross_entropy(ref(xb), yb)
            loss.backward()
            if spec.clip_grad is not None:
                nn.utils.clip_grad_norm_(ref.parameters(), spec.clip_grad)
            opt.step()
            opt.zero_grad()
            grid.train_step(xb, yb)
            ours = grid.optimizers[0].param_groups
            assert [(g["lr"], g["weight_decay"]) for g in ours] == [(g["lr"], g["weight_decay"]) for g in opt.param_groups]
    assert opt.param_groups[0]["lr"] == 0.0  # the last step reaches final_lr
    torch.testing.assert_close(grid.logits(x)[0], ref(x), rtol=1e-4, atol=1e-4)
    opt.load_state_dict(grid.optimizers[0].state_dict())  # our AdamW state loads into V-JEPA's optimizer


def test_closed_form_schedules_match_the_stateful_ones():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(2, 2))])
    lr_s, wd_s = RefWarmupCosine(opt, 7, 2e-4, 1e-3, 50, 1e-6), RefCosineWD(opt, 0.04, 50, 0.4)
    for step in range(50):
        lr_s.step()
        wd_s.step()
        assert warmup_cosine_lr(step, 7, 50, 2e-4, 1e-3, 1e-6) == opt.param_groups[0]["lr"]
        assert cosine_wd(step, 50, 0.04, 0.4) == opt.param_groups[0]["weight_decay"]


def test_a_probe_trained_in_the_grid_equals_it_trained_alone():
    x, y = separable()
    grid_spec = AttentiveSpec(lrs=[1e-3, 3e-3], wds=[1e-3, 1e-2], base_batch=8)
    grid, stats = fit_on_tokens(x, y, grid_spec, CLASSES, num_heads=HEADS, epochs=2, batch_size=8, seed=5,
                                progress=False)
    for i, member in enumerate(grid.members):
        alone_spec = AttentiveSpec(lrs=[member.lr], wds=[member.wd], base_batch=8)
        alone, alone_stats = fit_on_tokens(x, y, alone_spec, CLASSES, num_heads=HEADS, epochs=2, batch_size=8,
                                           seed=5, progress=False)
        for key, value in alone.probes[0].state_dict().items():
            assert torch.equal(grid.probes[i].state_dict()[key], value), (member.name, key)
        assert alone_stats[0] == stats[i]


def test_the_grid_learns_and_resumes_exactly():
    x, y = separable(64)
    spec = AttentiveSpec(lrs=[1e-2], wds=[1e-3], base_batch=16)
    grid, stats = fit_on_tokens(x, y, spec, CLASSES, num_heads=HEADS, epochs=6, batch_size=16, progress=False)
    topk, labels = predict_tokens(grid, x, y, batch_size=10)
    assert topk.shape == (1, 64, 5) and stats[0]["top1"] > 90 and (topk[0, :, 0] == labels).float().mean() > 0.9
    assert grid.lr_record() == {"name": "adamw", "base_lr": [1e-2], "base_batch": 16, "effective_lr": [1e-2]}

    def run(split_at=None):
        g = AttentiveGrid(spec, D, HEADS, CLASSES, batch_size=16, steps_per_epoch=4, epochs=2, seed=1)
        for step, (xb, yb) in enumerate(zip(x.split(16) * 2, y.split(16) * 2, strict=True)):
            if step == split_at:  # a new process picks up the saved state
                state = g.state_dict()
                g = AttentiveGrid(spec, D, HEADS, CLASSES, batch_size=16, steps_per_epoch=4, epochs=2, seed=9)
                g.load_state_dict(state)
            g.train_step(xb, yb)
        return g.probes[0].state_dict()

    straight, resumed = run(), run(split_at=4)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_lr_follows_the_batch_and_bad_grids_fail():
    spec = AttentiveSpec(lrs=[1e-3], start_lr=2e-4, warmup_epochs=1, final_lr=1e-5)
    grid = AttentiveGrid(spec, D, HEADS, CLASSES, batch_size=256, steps_per_epoch=10, epochs=2)
    assert grid.schedule(grid.members[0], 9)[0] == pytest.approx(2.5e-4)  # peak after warm-up, x 256/1024
    assert grid.schedule(grid.members[0], 19)[0] == pytest.approx(2.5e-6)  # final_lr scales the same way
    with pytest.raises(ConfigError, match="attentive grid is empty"):
        AttentiveGrid(AttentiveSpec(wds=[]), D, HEADS, CLASSES, batch_size=8, steps_per_epoch=1, epochs=1)
