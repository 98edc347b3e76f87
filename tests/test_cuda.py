"""The CUDA path: the same numbers as on the CPU, AMP training, resume, the protocol's
student pre-training on the device, the teacher cache, evaluation, the CLI demo.

Skipped without a GPU (CI has none); run on a GPU machine with
``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from pairs import Pairs
from torch import nn

import sp_adapter
from sp_adapter.backbones.unet import UNet
from sp_adapter.train import Arm, TrainConfig, Trainer, list_checkpoints, run_arms
from sp_adapter.train import protocol as protocol_module
from sp_adapter.train.evaluate import deblur, evaluate
from sp_adapter.train.student import pretrain_student

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def exact_cuda_math():
    """fp32 without TF32 and deterministic cuDNN, so CUDA results compare with the CPU's
    (and a resumed run with an uninterrupted one)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved


@pytest.fixture
def gpu_teacher(teacher):
    """A copy of the session's teacher (which other tests use on the CPU)."""
    return copy.deepcopy(teacher)


def config(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, alpha=0.0, perceptual="none", log_every=1,
                progress=False, device="cuda", lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def active_wrapped(teacher, seed: int = 0) -> nn.Module:
    """A wrapped UNet with the teacher-initialised student and a prior that changes the
    output (SAT's convolutions drawn away from their zero start)."""
    torch.manual_seed(seed)
    net = sp_adapter.wrap(UNet(width=8, blocks=1), teacher=teacher)
    for embedding in net.sp_prior.embeddings.values():
        nn.init.normal_(embedding.fusion.conv1.weight, std=0.1)
        nn.init.normal_(embedding.fusion.conv2.weight, std=0.1)
    return net


def bare_copy(net: nn.Module) -> nn.Module:
    """The UNet under wrapped ``net``, as a separate network with the same weights."""
    bare = UNet(width=8, blocks=1)
    bare.load_state_dict({k: v for k, v in net.state_dict().items()
                          if not k.startswith("sp_prior.")})
    return bare.to(next(net.parameters()).device).eval()


def test_wrapped_model_and_prior_loss_on_cuda_match_the_cpu(gpu_teacher):
    net = active_wrapped(gpu_teacher).eval()
    bare = bare_copy(net)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    sharp = torch.rand_like(x)
    with torch.no_grad():
        cpu_out = net(x)
        cpu_loss = sp_adapter.prior_loss(net, sharp)
        net.cuda()
        gpu_out = net(x.cuda())
        gpu_loss = sp_adapter.prior_loss(net, sharp.cuda())
    assert gpu_out.device.type == "cuda" and gpu_loss.device.type == "cuda"
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu_loss.cpu(), cpu_loss, atol=1e-4, rtol=1e-4)
    with torch.no_grad(), sp_adapter.prior_disabled(net):
        plain = net(x.cuda())
    assert (plain - gpu_out).abs().max() > 1e-3  # the prior acts on the GPU too
    # unwrap on the GPU gives back the bare network: its keys, weights and output
    restored = sp_adapter.unwrap(net)
    assert restored.state_dict().keys() == bare.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(restored(x.cuda()).cpu(), bare(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_on_cuda_learns_and_resumes(gpu_teacher, tmp_path, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    data, val = Pairs(8, keys=True), Pairs(3, seed=1, keys=True)
    cfg = config(steps=6, amp=amp, checkpoint_every=2, val_every=3)

    straight = Trainer(active_wrapped(gpu_teacher), data, cfg, run_dir=tmp_path / "a",
                       val_data=val)
    result = straight.fit()
    assert straight.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert straight.scaler.is_enabled() == (amp == "fp16")  # loss scaling for fp16 only
    rows = [h for h in result.history if "total" in h]
    assert len(rows) == 6 and all(h["prior"] > 0 for h in rows)
    assert all(torch.isfinite(torch.tensor(h["total"])) for h in rows)
    assert all(p.device.type == "cuda" for p in straight.module.parameters())
    assert result.validation is not None and result.validation.psnr > 10

    class Killed(Exception):
        pass

    def kill_at_5(trainer, stats):
        if trainer.step == 5:
            raise Killed

    crashed = Trainer(active_wrapped(gpu_teacher), data, cfg, run_dir=tmp_path / "b",
                      val_data=val, callbacks=[kill_at_5])
    with pytest.raises(Killed):
        crashed.fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [2, 4]
    resumed = Trainer(active_wrapped(gpu_teacher), data, cfg, run_dir=tmp_path / "b",
                      val_data=val)
    again = resumed.fit(resume=True)
    assert again.resumed_from == 4 and again.steps == 6
    assert resumed.scaler.get_scale() == straight.scaler.get_scale()  # restored, not reset
    # as exact as CUDA repeats itself: a second uninterrupted run gives the noise floor
    # (0 where the kernels are deterministic; some backward kernels add with atomics)
    again_straight = Trainer(active_wrapped(gpu_teacher), data, cfg, run_dir=tmp_path / "c",
                             val_data=val)
    again_straight.fit()
    a, b = straight.module.state_dict(), resumed.module.state_dict()
    c = again_straight.module.state_dict()
    for key in a:
        if a[key].is_floating_point():
            floor = (a[key] - c[key]).abs().max().item()
            assert (a[key] - b[key]).abs().max().item() <= 10 * floor + 1e-7, key
        else:
            assert torch.equal(a[key], b[key]), key
    log = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in log if "total" in h] == [1, 2, 3, 4, 5, 6]
    for got, want in zip([h["total"] for h in log if "total" in h], [h["total"] for h in rows],
                         strict=True):
        assert got == pytest.approx(want, rel=1e-3)


def test_teacher_cache_on_cuda_gives_the_same_training(gpu_teacher):
    cfg = config(steps=4, new_samples_each_epoch=False, amp="off")
    plain = Trainer(active_wrapped(gpu_teacher), Pairs(8, keys=True), cfg)
    plain.fit()
    cached = Trainer(active_wrapped(gpu_teacher), Pairs(8, keys=True),
                     config(steps=4, new_samples_each_epoch=False, amp="off", cache_teacher=True))
    cached.fit()
    assert (cached.cache.misses, cached.cache.hits) == (8, 8)
    for a, b in zip(plain.history, cached.history, strict=True):
        assert a["prior"] == pytest.approx(b["prior"], rel=1e-5)
    for p, q in zip(plain.module.parameters(), cached.module.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)


def test_student_pretraining_runs_on_the_training_device(gpu_teacher, monkeypatch):
    model = active_wrapped(gpu_teacher)
    result = pretrain_student(model, Pairs(8, keys=True), 4, batch_size=4, lr=1e-3, device="cuda",
                              progress=False, num_workers=2)
    learner = sp_adapter.get_prior(model).learner
    assert all(p.device.type == "cuda" for p in learner.parameters())
    assert result.losses[-1] < result.losses[0] and result.seconds > 0

    # the protocol pre-trains the student on the device the arms train on
    devices = []

    def spy(*args, **kwargs):
        devices.append(torch.device(kwargs["device"]).type)
        return pretrain_student(*args, **kwargs)

    monkeypatch.setattr(protocol_module, "pretrain_student", spy)
    arms = [Arm("base"), Arm("sp", prior=sp_adapter.PriorConfig(), student_steps=2)]
    base, sp = run_arms(arms, Pairs(8, keys=True), Pairs(2, seed=1, keys=True), config(steps=2),
                        teacher=gpu_teacher, options={"width": 8, "blocks": 1},
                        pretrain_steps=2, arm_steps=2)
    assert devices == ["cuda"] and sp.student_seconds > 0
    for arm in (base, sp):
        assert all(p.device.type == "cuda" for p in arm.model.parameters())
        assert arm.evaluation is not None and arm.evaluation.psnr > 10


def test_evaluation_and_tiled_inference_on_cuda_match_the_cpu(gpu_teacher):
    net = active_wrapped(gpu_teacher)
    data = Pairs(3, size=48, seed=2, keys=True)
    cpu = evaluate(net, data, device="cpu")
    gpu = evaluate(net.cuda(), data, device="cuda")
    assert gpu.psnr == pytest.approx(cpu.psnr, abs=1e-3)
    assert gpu.ssim == pytest.approx(cpu.ssim, abs=1e-5)
    x = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(3))
    tiled_gpu = deblur(net, x.cuda(), tile=32, overlap=8)
    assert tiled_gpu.shape == x.shape and tiled_gpu.device.type == "cuda"
    torch.testing.assert_close(tiled_gpu.cpu(), deblur(net.cpu(), x, tile=32, overlap=8),
                               atol=1e-4, rtol=1e-4)


def test_a_prior_trained_on_cuda_saves_and_loads_on_the_cpu(gpu_teacher, tmp_path):
    net = active_wrapped(gpu_teacher).cuda()
    sp_adapter.save_pretrained(net, tmp_path / "prior")
    loaded = sp_adapter.from_pretrained(tmp_path / "prior", model=bare_copy(net).cpu()).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x.cuda()).cpu(), atol=1e-4, rtol=1e-4)


def test_the_demo_runs_on_cuda(tmp_path):
    from sp_adapter.cli import main

    out = tmp_path / "report"
    assert main(["demo", "--out", str(out), "--device", "cuda", "--steps", "4", "--crop", "32",
                 "--batch", "2", "--length", "8", "--test-crop", "32",
                 "--test-crops-per-photo", "1", "--student-steps", "2", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["device"].startswith("cuda")
    assert (out / "README.md").is_file() and any((out / "images").glob("*.png"))


@pytest.mark.parametrize("name", ["UNet", "DeepDeblur", "MPRNet", "MPRNetStage1", "MIMO-UNet",
                                  "MIMO-UNetPlus", "MSSNet"])
def test_prior_compiled_with_cuda_graphs_equals_eager_on_every_backbone(name, gpu_teacher):
    from test_optimize import compiled_equals_eager

    compiled_equals_eager(name, gpu_teacher, device="cuda")  # inductor, reduce-overhead


def test_optimize_for_inference_compiles_on_cuda_and_keeps_the_output(gpu_teacher):
    net = active_wrapped(gpu_teacher).cuda().eval()
    x = torch.rand(2, 3, 64, 64, device="cuda")
    with torch.no_grad():
        eager = net(x)
        torch._dynamo.reset()
        sp_adapter.optimize_for_inference(net)
        assert sp_adapter.attach.optimize.is_prior_compiled(net)
        for _ in range(3):  # CUDA graphs are recorded, then replayed
            torch.testing.assert_close(net(x), eager, atol=1e-5, rtol=1e-5)
    with torch.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
        torch.testing.assert_close(net(x).float(), eager, atol=0.1, rtol=0.1)


def test_lean_modulation_on_cuda_equals_the_reference_and_saves_memory(gpu_teacher):
    from sp_adapter.backbones.deepdeblur import MSResNet, to_input_pyramid
    from sp_adapter.prior.embedding import reference_modulation

    torch.manual_seed(0)
    bare = MSResNet(n_resblocks=2).cuda().eval()
    net = sp_adapter.wrap(copy.deepcopy(bare), teacher=gpu_teacher).cuda().eval()
    for embedding in net.sp_prior.embeddings.values():
        nn.init.normal_(embedding.fusion.conv1.weight, std=0.1)
    x = to_input_pyramid(torch.rand(1, 3, 512, 512, device="cuda"))

    def peak(fn) -> float:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        with torch.inference_mode():
            out = fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start, out

    def reference():
        with reference_modulation():
            return net(x)

    base_mb, _ = peak(lambda: bare(x))
    lean_mb, lean = peak(lambda: net(x))
    full_mb, full = peak(reference)
    torch.testing.assert_close(lean[0], full[0], atol=1e-4, rtol=1e-5)
    assert lean_mb - base_mb < 0.5 * (full_mb - base_mb)
