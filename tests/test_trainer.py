"""Trainer: loss goes down, atomic checkpoints, exact resume, teacher cache, options."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from pairs import Pairs
from torch import nn

import sp_adapter
from sp_adapter.backbones.unet import UNet
from sp_adapter.train import (
    BatchStream,
    CacheMismatchError,
    DistInfo,
    ModelSpec,
    TeacherFeatureCache,
    TrainConfig,
    Trainer,
    WarmupCosine,
    list_checkpoints,
    load_checkpoint,
    load_trained,
)
from sp_adapter.train.evaluate import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


class EpochPairs(Pairs):
    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def config(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=4, alpha=0.0, perceptual="none", log_every=1,
                progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def small_wrapped(teacher, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return sp_adapter.wrap(UNet(width=8, blocks=1), teacher=teacher, student="small",
                           small_width=8)


def losses_of(history) -> list[float]:
    return [h["total"] for h in history if "total" in h]


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    trainer = Trainer(UNet(width=8, blocks=1), Pairs(4), config(steps=25, lr=2e-3, min_lr=1e-4))
    result = trainer.fit()
    losses = losses_of(result.history)
    assert len(losses) == 25
    assert sum(losses[-3:]) / 3 < 0.75 * losses[0]


def test_wrapped_model_adds_the_prior_and_validates(teacher, tmp_path):
    model = small_wrapped(teacher)
    trainer = Trainer(model, Pairs(8), config(steps=3, val_every=2), run_dir=tmp_path,
                      val_data=Pairs(3, seed=1))
    result = trainer.fit()
    train_rows = [h for h in result.history if "total" in h]
    assert all(h["prior"] > 0 for h in train_rows)
    for h in train_rows:
        assert h["total"] == pytest.approx(h["reconstruction"] + 0.1 * h["prior"], rel=1e-5)
    vals = [h for h in result.history if "val_psnr" in h]
    assert [v["step"] for v in vals] == [2, 3] and result.validation is not None
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.history
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["wrapped"] is True and run["config"]["steps"] == 3
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    torch.manual_seed(0)
    trainer = Trainer(UNet(width=8, blocks=1), Pairs(4), config(), run_dir=tmp_path)
    first = trainer.save_checkpoint()
    good = first.read_bytes()
    real_save = torch.save

    def dies_midway(obj, handle, *args, **kwargs):
        handle.write(b"partial checkpoint bytes")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dies_midway)
    trainer.step = 1
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint()
    monkeypatch.setattr(torch, "save", real_save)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [first.name]  # no temp file left
    assert first.read_bytes() == good
    state = load_checkpoint(first)
    assert state["step"] == 0 and "optimizer" in state and "rng" in state


class Noisy(nn.Module):
    """A UNet behind dropout: its training consumes the global RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.net = UNet(width=8, blocks=1)

    def forward(self, x):
        return self.net(self.drop(x))


@pytest.mark.parametrize("kind", ["wrapped", "dropout"])
def test_resume_after_kill_is_bit_exact(teacher, tmp_path, kind):
    def build():
        if kind == "wrapped":
            return small_wrapped(teacher)
        torch.manual_seed(0)
        return Noisy()

    cfg = config(steps=6, checkpoint_every=2, keep_checkpoints=3)
    data = Pairs(8)
    straight = Trainer(build(), data, cfg, run_dir=tmp_path / "a")
    straight.fit()

    class Killed(Exception):
        pass

    def kill_at_5(trainer, stats):
        if trainer.step == 5:
            raise Killed

    crashed = Trainer(build(), data, cfg, run_dir=tmp_path / "b", callbacks=[kill_at_5])
    with pytest.raises(Killed):
        crashed.fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [2, 4]
    resumed = Trainer(build(), data, cfg, run_dir=tmp_path / "b")
    result = resumed.fit(resume=True)
    assert result.resumed_from == 4 and result.steps == 6
    a, b = straight.module.state_dict(), resumed.module.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in log if "total" in h] == [1, 2, 3, 4, 5, 6]
    assert losses_of(log) == losses_of(straight.history)


def test_resume_refuses_other_options_and_fresh_run_refuses_old_checkpoints(tmp_path):
    torch.manual_seed(0)
    Trainer(UNet(width=8, blocks=1), Pairs(4), config(steps=2), run_dir=tmp_path,
            data_options={"crop": 16}).fit()
    with pytest.raises(ValueError, match="lr=0.0002"):
        Trainer(UNet(width=8, blocks=1), Pairs(4), config(steps=2, lr=1e-3),
                run_dir=tmp_path).fit(resume=True)
    with pytest.raises(ValueError, match=r"other data: crop=16 \(now 32\), photos=None"):
        Trainer(UNet(width=8, blocks=1), Pairs(4), config(steps=2), run_dir=tmp_path,
                data_options={"crop": 32, "photos": ["x"]}).fit(resume=True)
    # without data options on either side only the training options are compared
    Trainer(UNet(width=8, blocks=1), Pairs(4), config(steps=2), run_dir=tmp_path).fit(
        resume=True)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        Trainer(UNet(width=8, blocks=1), Pairs(4), config(steps=2), run_dir=tmp_path).fit()


def test_teacher_cache_gives_the_same_training(teacher):
    cfg = config(steps=6, new_samples_each_epoch=False)
    plain = Trainer(small_wrapped(teacher), Pairs(8, keys=True), cfg)
    plain.fit()
    cached = Trainer(small_wrapped(teacher), Pairs(8, keys=True),
                     config(steps=6, new_samples_each_epoch=False, cache_teacher=True))
    cached.fit()
    for a, b in zip(plain.history, cached.history, strict=True):
        assert a["total"] == pytest.approx(b["total"], rel=1e-5)
        assert a["prior"] == pytest.approx(b["prior"], rel=1e-5)
    assert cached.cache is not None and len(cached.cache) == 8
    assert (cached.cache.misses, cached.cache.hits) == (8, 16)
    for p, q in zip(plain.module.parameters(), cached.module.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_teacher_cache_refuses_what_it_cannot_serve(teacher):
    cache = TeacherFeatureCache(teacher)
    sharp = torch.rand(2, 3, 32, 32)
    first = cache.targets(sharp, ["a", "b"])
    again = cache.targets(sharp.flip(0), ["b", "a"])
    assert torch.equal(again[0][0], first[0][1]) and cache.hits == 2
    with pytest.raises(CacheMismatchError, match="different sharp crop"):
        cache.targets(torch.rand(2, 3, 32, 32), ["a", "b"])
    with pytest.raises(ValueError, match="new_samples_each_epoch=False"):
        Trainer(small_wrapped(teacher), EpochPairs(8, keys=True), config(cache_teacher=True))
    with pytest.raises(ValueError, match="return_key=True"):
        Trainer(small_wrapped(teacher), Pairs(8),
                config(cache_teacher=True, new_samples_each_epoch=False))


def test_prior_only_freezes_the_backbone(teacher):
    model = small_wrapped(teacher)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(model, Pairs(4), config(steps=2, prior_only=True)).fit()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("sp_prior.") for k in changed)


def test_embedding_lr_scale_gives_the_embeddings_their_own_rate(teacher):
    model = small_wrapped(teacher)
    trainer = Trainer(model, Pairs(4), config(steps=4, lr=1e-3, embedding_lr_scale=0.1))
    groups = trainer.optimizer.param_groups
    embedding = {id(p) for p in model.sp_prior.embeddings.parameters()}
    assert [len(g["params"]) for g in groups][1] == len(embedding)
    assert {id(p) for p in groups[1]["params"]} == embedding
    assert embedding.isdisjoint(id(p) for p in groups[0]["params"])
    assert groups[0]["lr"] == pytest.approx(1e-3) and groups[1]["lr"] == pytest.approx(1e-4)
    trainer.fit()  # the cosine scales both groups alike
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])
    with pytest.raises(ValueError, match="embedding_lr_scale must be positive"):
        config(embedding_lr_scale=0.0)


def frozen_and_changed(model: nn.Module, trainer: Trainer, frozen: set[int]) -> set[str]:
    """Check that the ``frozen`` parameters are outside ``trainer``'s optimiser, train,
    and return the names of the state entries the training changed."""
    assert frozen.isdisjoint(id(p) for g in trainer.optimizer.param_groups for p in g["params"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit()
    after = model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_student_lr_scale_gives_the_student_its_own_rate_and_0_freezes_it(teacher):
    model = small_wrapped(teacher)
    student = {id(p) for p in model.sp_prior.learner.student.parameters()}
    groups = Trainer(model, Pairs(4), config(steps=4, lr=1e-3, student_lr_scale=0.1)) \
        .optimizer.param_groups
    assert [{id(p) for p in g["params"]} == student for g in groups] == [False, False, True]
    assert groups[2]["lr"] == pytest.approx(1e-4) and groups[0]["lr"] == pytest.approx(1e-3)

    model = small_wrapped(teacher)
    student = {id(p) for p in model.sp_prior.learner.student.parameters()}
    trainer = Trainer(model, Pairs(4), config(steps=2, lr=1e-3, student_lr_scale=0))
    changed = frozen_and_changed(model, trainer, student)
    assert changed and not any(k.startswith("sp_prior.learner.student.") for k in changed)
    assert any(k.startswith("sp_prior.embeddings.") for k in changed)
    assert any(k.startswith("sp_prior.learner.") for k in changed)  # CLC still trains
    with pytest.raises(ValueError, match="student_lr_scale must be >= 0"):
        config(student_lr_scale=-1.0)


def test_backbone_lr_scale_gives_the_backbone_its_own_rate_and_0_freezes_it(teacher):
    model = small_wrapped(teacher)
    backbone = {id(p) for n, p in model.named_parameters() if not n.startswith("sp_prior.")}
    clc = {id(p) for p in model.sp_prior.learner.clc.parameters()}
    groups = Trainer(model, Pairs(4), config(steps=4, lr=1e-3, backbone_lr_scale=0.1)) \
        .optimizer.param_groups
    # the first group keeps the prior's own layers (CLC, student), the last is the backbone
    assert [{id(p) for p in g["params"]} == backbone for g in groups] == [False, False, True]
    assert clc <= {id(p) for p in groups[0]["params"]}
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-3, 1e-4])
    # at 1 the backbone shares the first group with the prior's other layers
    groups = Trainer(small_wrapped(teacher), Pairs(4), config(steps=4)).optimizer.param_groups
    assert len(groups) == 2
    # a bare network has no prior to set it against: one group at the full rate
    torch.manual_seed(0)
    bare = Trainer(UNet(width=8, blocks=1), Pairs(4),
                   config(steps=4, lr=1e-3, backbone_lr_scale=0.1)).optimizer.param_groups
    assert len(bare) == 1 and bare[0]["lr"] == pytest.approx(1e-3)

    model = small_wrapped(teacher)
    trainer = Trainer(model, Pairs(4), config(steps=2, lr=1e-3, backbone_lr_scale=0))
    changed = frozen_and_changed(model, trainer, backbone)
    assert changed and all(k.startswith("sp_prior.") for k in changed)
    assert any(k.startswith("sp_prior.embeddings.") for k in changed)
    assert any(k.startswith("sp_prior.learner.student.") for k in changed)
    with pytest.raises(ValueError, match="backbone_lr_scale must be >= 0"):
        config(backbone_lr_scale=-0.5)


def test_a_backbone_at_a_tenth_of_the_rate_moves_a_tenth_as_far(teacher):
    """Adam's first step moves each weight by about its group's rate: the backbone's
    step at ``backbone_lr_scale=0.1`` is a tenth of the step at 1, the prior's the same."""
    moves = {}
    for scale in (1.0, 0.1):
        model = small_wrapped(teacher)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        Trainer(model, Pairs(4), config(steps=1, lr=1e-3, weight_decay=0.0,
                                        backbone_lr_scale=scale)).fit()
        moves[scale] = {
            part: max(float((p.detach() - before[n]).abs().max())
                      for n, p in model.named_parameters()
                      if n.startswith("sp_prior.embeddings.") == (part == "prior")
                      and (part == "prior" or not n.startswith("sp_prior.")))
            for part in ("prior", "backbone")
        }
    assert moves[0.1]["backbone"] == pytest.approx(0.1 * moves[1.0]["backbone"], rel=0.05)
    assert moves[0.1]["prior"] == pytest.approx(moves[1.0]["prior"], rel=1e-6)


def test_schedule_and_stream():
    f = WarmupCosine(total=10, warmup=2, floor=0.01)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(10) == pytest.approx(0.01)
    assert f(6) == pytest.approx(0.01 + 0.99 * 0.5)
    stream = BatchStream(Pairs(8, keys=True), 4, DistInfo(), seed=3)
    it = stream.batches(0)
    keys = [list(next(it)[2]) for _ in range(5)]
    assert sorted(keys[0] + keys[1]) == [f"s{i}" for i in range(8)]
    assert keys[0] != keys[2] or keys[1] != keys[3]  # reshuffled per epoch
    resumed = stream.batches(3)
    assert [list(next(resumed)[2]) for _ in range(2)] == keys[3:5]


def test_trained_model_reloads_from_its_run(teacher, tmp_path):
    spec = ModelSpec("unet", {"width": 8, "blocks": 1},
                     sp_adapter.PriorConfig(student="small", small_width=8).to_dict())
    torch.manual_seed(0)
    model = spec.build(teacher=teacher)
    Trainer(model, Pairs(4), config(steps=2), run_dir=tmp_path, model_spec=spec).fit()
    loaded, loaded_spec, info = load_trained(tmp_path)
    assert loaded_spec == spec and info["step"] == 2
    x = torch.rand(1, 3, 24, 20)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(RuntimeError, match="no teacher"):
        sp_adapter.prior_loss(loaded, x)


def test_arms_see_identical_batches(teacher):
    from sp_adapter.train import Arm, run_arms

    arms = [Arm("a"), Arm("b", train={"lr": 1e-6}),
            Arm("sp", prior=sp_adapter.PriorConfig(student="small", small_width=8))]
    results = run_arms(arms, Pairs(8), Pairs(2, seed=1), config(), teacher=teacher,
                       options={"width": 8, "blocks": 1}, pretrain_steps=2, arm_steps=3)
    a, b, sp = results
    # an arm's own train options change its steps only: b's tiny lr leaves it near a's
    # shared start, a moved away from it
    assert losses_of(a.history)[0] == pytest.approx(losses_of(b.history)[0])
    drift = [(p - q).abs().max().item()
             for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True)]
    assert max(drift) > 1e-4
    arms[1] = Arm("b")
    results = run_arms(arms[:2], Pairs(8), Pairs(2, seed=1), config(), teacher=teacher,
                       options={"width": 8, "blocks": 1}, pretrain_steps=2, arm_steps=3)
    a, b = results
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)  # same start, same batches, same seeds
    assert a.shared_steps == 2 and a.steps == 3 and a.evaluation is not None
    assert losses_of(a.history) == losses_of(b.history)
    assert sp.params > a.params
    # the wrapped arm starts from the base's exact output, so its first L1 is the same
    assert sp.history[0]["reconstruction"] == pytest.approx(a.history[0]["reconstruction"])


def test_arms_validated_on_the_test_set_are_scored_once(teacher, monkeypatch):
    """With the test set as validation set, an arm's final validation is its test score:
    the same numbers as a separate evaluation, without scoring every arm twice."""
    from sp_adapter.train import Arm, protocol, run_arms

    arms = [Arm("a"), Arm("sp", prior=sp_adapter.PriorConfig(student="small", small_width=8))]
    test = Pairs(3, seed=1, keys=True)
    kw = dict(teacher=teacher, options={"width": 8, "blocks": 1}, pretrain_steps=2,
              arm_steps=2)
    apart = run_arms(arms, Pairs(8), test, config(), **kw)
    calls = []
    evaluate_module = importlib.import_module("sp_adapter.train.evaluate")
    for module in (protocol, evaluate_module):  # run_arms' own and score_inputs' calls
        monkeypatch.setattr(module, "evaluate",
                            lambda *a, **k: calls.append(a[0]) or evaluate(*a, **k))
    joint = run_arms(arms, Pairs(8), test, config(val_every=1), val_data=test, **kw)
    for x, y in zip(apart, joint, strict=True):
        assert y.evaluation.per_image == x.evaluation.per_image  # blurry scores included
        assert (y.evaluation.psnr, y.evaluation.ssim, y.evaluation.blurry_psnr) == \
            (x.evaluation.psnr, x.evaluation.ssim, x.evaluation.blurry_psnr)
        assert [s for s in y.history if "val_psnr" in s][-1]["val_psnr"] == x.evaluation.psnr
    # one pass over the blurry inputs for both arms, none over an arm's outputs
    assert len(calls) == 1 and isinstance(calls[0], nn.Identity)


def test_student_pretraining_trains_the_learner_alone_and_needs_hcl(teacher):
    from sp_adapter.train import pretrain_student

    model = small_wrapped(teacher)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = pretrain_student(model, Pairs(8), 8, batch_size=4, lr=1e-3, progress=False)
    assert result.losses[-1] < result.losses[0]  # HCL distance to the teacher goes down
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(".learner." in k for k in changed), sorted(changed)[:5]
    # Net0*: the prior without HCL has nothing to distil
    torch.manual_seed(0)
    plain = sp_adapter.wrap(UNet(width=8, blocks=1), teacher=teacher, student="small",
                            small_width=8, config=sp_adapter.PriorConfig(hcl=False))
    with pytest.raises(ValueError, match="hcl=False"):
        pretrain_student(plain, Pairs(8), 1, batch_size=4, progress=False)
