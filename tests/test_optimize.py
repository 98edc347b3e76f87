"""The memory-lean modulation and the compiled prior path equal the eager reference."""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sp_adapter as sp
import sp_adapter.prior.embedding as embedding_module
from sp_adapter.attach.optimize import PriorCompileWarning, is_prior_compiled
from sp_adapter.backbones.deepdeblur import MSResNet, to_input_pyramid
from sp_adapter.backbones.mimo_unet import MIMOUNet, MIMOUNetPlus
from sp_adapter.backbones.mprnet import MPRNet, MPRNetStage1
from sp_adapter.backbones.mssnet import mssnet_small
from sp_adapter.backbones.unet import UNet
from sp_adapter.prior.embedding import reference_modulation

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32


def _image(x):
    return (x,)


BACKBONES = {
    "UNet": (lambda: UNet(width=8, blocks=1), _image),
    "DeepDeblur": (lambda: MSResNet(n_resblocks=2, n_feats=16),
                   lambda x: (to_input_pyramid(x),)),
    "MPRNet": (lambda: MPRNet(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=1),
               _image),
    "MPRNetStage1": (lambda: MPRNetStage1(n_feat=16, scale_unetfeats=8), _image),
    "MIMO-UNet": (lambda: MIMOUNet(num_res=1), _image),
    "MIMO-UNetPlus": (lambda: MIMOUNetPlus(num_res=1), _image),
    "MSSNet": (mssnet_small, _image),
}


def _outputs(out) -> list[torch.Tensor]:
    return [o for o in out] if isinstance(out, (list, tuple)) else [out]


def _active(name: str, teacher, **options) -> tuple[nn.Module, object]:
    """A wrapped small twin whose SPEs change the output (weights drawn away from 0)."""
    torch.manual_seed(0)
    build, inputs = BACKBONES[name]
    net = sp.wrap(build(), teacher=teacher, **options)
    for embedding in net.sp_prior.embeddings.values():
        for conv in embedding.fusion.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.normal_(conv.weight, std=0.1)
                nn.init.normal_(conv.bias, std=0.1)
    return net, inputs


def _blurry(batch: int = 1, size: int = SIZE) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(3))


def _assert_all_close(got, want) -> None:
    for a, b in zip(_outputs(got), _outputs(want), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.fixture
def lean_calls(monkeypatch):
    """Counts the SPE modulations computed the lean way."""
    calls = []
    original = embedding_module.lean_modulation

    def spy(*args, **kwargs):
        calls.append(args[1].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(embedding_module, "lean_modulation", spy)
    return calls


@pytest.mark.parametrize("chunk", [None, 64])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_lean_modulation_equals_the_reference_on_every_backbone(
    name, chunk, teacher, lean_calls, monkeypatch
):
    if chunk is not None:  # many chunks of a few channels each
        monkeypatch.setattr(embedding_module, "LEAN_CHUNK_ELEMENTS", chunk)
    net, inputs = _active(name, teacher)
    net.eval()
    x = _blurry(2)
    with torch.no_grad():
        with reference_modulation():
            reference = net(*inputs(x))
        assert not lean_calls
        with sp.prior_disabled(net):
            plain = net(*inputs(x))
        lean = net(*inputs(x))
    assert len(lean_calls) >= len(net.sp_prior.embeddings)
    assert any(not torch.allclose(a, b)  # the prior acts
               for a, b in zip(_outputs(lean), _outputs(plain), strict=True))
    _assert_all_close(lean, reference)


@pytest.mark.parametrize("fusion", ["sat", "add"])
@pytest.mark.parametrize("strength", [1.0, 0.5, "per-image"])
def test_lean_modulation_keeps_the_strength_and_the_fusion(
    fusion, strength, teacher, lean_calls, monkeypatch
):
    monkeypatch.setattr(embedding_module, "LEAN_CHUNK_ELEMENTS", 100)
    net, inputs = _active("UNet", teacher, fusion=fusion)
    net.eval()
    x = _blurry(3)
    hook, prior = sp.get_hook(net), net.sp_prior
    per_image = torch.tensor([0.2, 1.0, 1.7]).view(3, 1, 1, 1)
    if strength == "per-image":  # what strength_jitter draws in training, here by hand
        monkeypatch.setattr(prior, "sample_strengths", lambda batch, device: per_image)
    else:
        sp.set_prior_strength(net, strength)
    with torch.inference_mode():
        with reference_modulation():
            reference = net(x)
        lean = net(x)
    assert len(lean_calls) == 3 and hook.enabled
    torch.testing.assert_close(lean, reference, atol=1e-5, rtol=1e-5)


def test_concat_fusion_and_gradients_use_the_reference(teacher, lean_calls):
    net, _ = _active("UNet", teacher, fusion="concat")
    with torch.no_grad():
        net.eval()(_blurry())
    assert not lean_calls  # concat convolves g itself: no lean form
    net, _ = _active("UNet", teacher)
    x = _blurry(2)
    net.train()
    out = net(x)
    assert not lean_calls  # autograd keeps the maps anyway
    with reference_modulation():
        reference = copy.deepcopy(net)(x)
    torch.testing.assert_close(out, reference)


def _peak_mib(fn) -> float:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    return max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]") / 2**20


def test_lean_modulation_needs_less_memory_than_the_reference(teacher, monkeypatch):
    monkeypatch.setattr(embedding_module, "LEAN_CHUNK_ELEMENTS", 2**16)  # as a large image
    torch.manual_seed(0)
    bare = MSResNet(n_resblocks=1, n_feats=64).eval()
    net = sp.wrap(copy.deepcopy(bare), teacher=teacher).eval()
    x = to_input_pyramid(_blurry(1, 128))

    def run(model, reference=False):
        def fn():
            with torch.inference_mode():
                if reference:
                    with reference_modulation():
                        return model(x)
                return model(x)
        return fn

    base, lean, full = _peak_mib(run(bare)), _peak_mib(run(net)), _peak_mib(run(net, True))
    # the reference holds both full-resolution maps, g and h + sigma at the finest scale
    assert lean - base < 0.5 * (full - base)


# -- the compiled prior path -----------------------------------------------------------


def compiled_equals_eager(name: str, teacher, **compile_options) -> None:
    """The wrapped twin with :func:`sp.compile_prior` against its eager copy: the same
    outputs under ``no_grad``, the same loss and gradients in a training step."""
    device = compile_options.pop("device", "cpu")
    net, inputs = _active(name, teacher, **compile_options.pop("prior_options", {}))
    x, sharp = _blurry(2), torch.rand(2, 3, SIZE, SIZE)
    eager = copy.deepcopy(net)
    net, eager, x, sharp = net.to(device), eager.to(device), x.to(device), sharp.to(device)
    torch._dynamo.reset()
    sp.compile_prior(net, **compile_options)
    assert is_prior_compiled(net)
    with torch.no_grad():
        _assert_all_close(net.eval()(*inputs(x)), eager.eval()(*inputs(x)))
    losses = []
    for model in (net.train(), eager.train()):
        out = _outputs(model(*inputs(x)))[0]
        loss = F.l1_loss(out, sharp)
        loss = loss + 0.1 * sp.prior_loss(model, sharp)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    for (key, a), b in zip(net.sp_prior.named_parameters(), eager.sp_prior.parameters(),
                           strict=True):
        if a.grad is not None or b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=key)
    assert is_prior_compiled(net)  # no fallback happened


def test_compiled_prior_equals_eager_in_inference_and_training(teacher):
    # Dynamo's graph capture only: the compilers themselves take minutes on a small CPU
    # (tests/test_cuda.py compiles every backbone with CUDA graphs)
    compiled_equals_eager("UNet", teacher, backend="eager", prior_options={"student": "small"})


def test_compile_failure_warns_once_and_stays_correct(teacher, monkeypatch):
    net, _ = _active("UNet", teacher)
    net.eval()
    x = _blurry()
    with torch.no_grad():
        eager = net(x)

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(PriorCompileWarning, match="no compiler here") as caught:
        sp.optimize_for_inference(net, compile=True)
    assert all("\n" not in str(w.message) for w in caught)  # one line each
    assert not is_prior_compiled(net)
    with torch.no_grad():
        torch.testing.assert_close(net(x), eager)


def test_a_failing_compiled_call_falls_back_for_good(teacher):
    net, _ = _active("UNet", teacher)
    net.eval()
    x = _blurry()
    with torch.no_grad():
        eager = net(x)

    def failing_backend(graph, example_inputs):
        raise RuntimeError("backend cannot lower this graph")

    torch._dynamo.reset()
    sp.compile_prior(net, backend=failing_backend)
    with torch.no_grad():
        with pytest.warns(PriorCompileWarning, match="runs eagerly"):
            out = net(x)
        torch.testing.assert_close(out, eager)
        assert not is_prior_compiled(net)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning
            torch.testing.assert_close(net(x), eager)


def test_the_inputs_own_error_passes_through_without_a_warning(teacher):
    net, _ = _active("UNet", teacher)
    torch._dynamo.reset()
    sp.compile_prior(net.eval(), backend="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PriorCompileWarning)
        with pytest.raises(ValueError, match="Bx3xHxW"):
            net(torch.rand(1, 4, SIZE, SIZE))


def test_copies_of_a_compiled_model_are_eager_with_their_own_weights(teacher):
    net, _ = _active("UNet", teacher, student="small")
    torch._dynamo.reset()
    sp.compile_prior(net.eval(), backend="eager")
    twin = copy.deepcopy(net)
    assert not is_prior_compiled(twin)
    with torch.no_grad():
        for p in twin.sp_prior.parameters():
            p.mul_(0.5)
        x = _blurry()
        assert not torch.allclose(twin(x), net(x))
        reference = copy.deepcopy(twin)
        torch.testing.assert_close(twin(x), reference(x))
    sp.decompile_prior(net)
    assert not is_prior_compiled(net)


def test_optimize_for_inference_sets_eval_and_compiles_only_on_a_gpu(teacher):
    net, _ = _active("UNet", teacher)
    net.train()
    assert sp.optimize_for_inference(net) is net
    assert not net.training and not net.sp_prior.training
    assert not is_prior_compiled(net)  # CPU: nothing to gain from CUDA graphs
    torch._dynamo.reset()
    sp.optimize_for_inference(net, compile=True, backend="eager")
    assert is_prior_compiled(net)


# -- recomputed skips ------------------------------------------------------------------


def test_recomputed_skips_give_the_same_output_in_less_memory(teacher, monkeypatch):
    monkeypatch.setattr(embedding_module, "LEAN_CHUNK_ELEMENTS", 2**16)
    torch.manual_seed(0)
    bare = MSResNet(n_resblocks=3, n_feats=64).eval()
    net = sp.wrap(copy.deepcopy(bare), teacher=teacher).eval()
    for embedding in net.sp_prior.embeddings.values():
        nn.init.normal_(embedding.fusion.conv1.weight, std=0.1)
    x = to_input_pyramid(_blurry(1, 128))

    def run(model):
        def fn():
            with torch.inference_mode():
                return model(x)
        return fn

    held_mb, held = _peak_mib(run(net)), run(net)()
    sp.optimize_for_inference(net, recompute_skips=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = run(net)()  # verifies the recomputed skips against the captured ones
    assert sp.get_hook(net).recompute_skips == dict.fromkeys(["scale0", "scale1", "scale2"], True)
    recomputed_mb, again = _peak_mib(run(net)), run(net)()
    for out in (first, again):
        _assert_all_close(out, held)
    base_mb = _peak_mib(run(bare))
    skip_mb = 64 * 128 * 128 * 4 / 2**20  # the finest scale's head output
    assert recomputed_mb < held_mb - 0.5 * skip_mb
    assert recomputed_mb - base_mb < 0.5 * skip_mb


class ScaledHead(nn.Module):
    """A skip module whose input the network changes in place after the call."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 32, 3, padding=1)
        self.body = nn.Conv2d(32, 32, 3, padding=1)
        self.tail = nn.Conv2d(32, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 1.0
        f = self.head(y)
        y.mul_(2.0)  # recomputing head(y) at the site would see the changed y
        return x + self.tail(self.body(f)) + y.mean()


def test_a_skip_that_cannot_be_recomputed_warns_and_is_held(teacher):
    torch.manual_seed(0)
    levels = [sp.Level("body", 32, skip="head", reduction=1, prior_level=0)]
    net = sp.wrap(ScaledHead(), levels, teacher=teacher)
    for embedding in net.sp_prior.embeddings.values():
        nn.init.normal_(embedding.fusion.conv1.weight, std=0.1)
    net.eval()
    x = _blurry()
    with torch.no_grad():
        held = net(x)
        sp.optimize_for_inference(net, recompute_skips=list(sp.get_hook(net).levels))
        with pytest.warns(UserWarning, match="holds the skip as usual"):
            first = net(x)
        assert sp.get_hook(net).recompute_skips == {}
        torch.testing.assert_close(first, held)
        torch.testing.assert_close(net(x), held)
    with pytest.raises(sp.LevelNotFoundError, match="not a level with a skip"):
        sp.optimize_for_inference(net, recompute_skips=["bodyy"])


# -- the benchmark that measures all this ------------------------------------------------


def test_overhead_benchmark_measures_every_variant_under_bf16(tmp_path):
    """What benchmarks/gpu_session.sh runs on a GPU, at a tiny size on the CPU."""
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "benchmarks"
    assert subprocess.run(["bash", "-n", str(script / "gpu_session.sh")]).returncode == 0
    sys.path.insert(0, str(script))
    try:
        import overhead
    finally:
        sys.path.remove(str(script))
    rows = overhead.main(["--backbones", "UNet", "--sizes", "32", "--batch", "2", "--repeats",
                          "1", "--warmup", "1", "--train-repeats", "1", "--no-machinery",
                          "--reference", "--compile-prior", "eager", "--amp", "bf16",
                          "--out", str(tmp_path / "overhead")])
    (row,) = rows
    assert row["amp"] == "bf16" and row["batch"] == 2
    for field in ("infer_optimized_ratio", "infer_reference_ratio", "train_optimized_ratio",
                  "peak_mb_reference", "peak_mb_optimized"):
        assert row[field] > 0, field
    table = (tmp_path / "overhead.md").read_text()
    assert "| UNet | 32 | 2 | bf16 |" in table and "optimized s" in table
