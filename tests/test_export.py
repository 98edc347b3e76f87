"""Every export route of a wrapped network (and of a distilled one, which is the bare
network): ``torch.jit.trace``, the legacy ONNX exporter, the dynamo ONNX exporter and
``torch.export`` give the eager outputs within 1e-5, at the export size and, with
dynamic height and width, at another size (both multiples of the prior's deepest
reduction and the backbone's size multiple). ONNX models run in onnxruntime on the CPU."""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import sp_adapter as sp
from sp_adapter.backbones.mimo_unet import MIMOUNet
from sp_adapter.backbones.nafnet import NAFNet
from sp_adapter.backbones.unet import UNet

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = 1e-5
EXPORT_SIZE = (2, 3, 64, 64)  # batch 2: an example batch of 1 would fix the batch at 1
OTHER_SIZE = (1, 3, 96, 64)

BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "UNet": lambda: UNet(width=8, blocks=1),
    "MIMOUNet": lambda: MIMOUNet(num_res=1),
    "NAFNet": lambda: NAFNet(width=8, enc_blk_nums=[1, 1, 1], dec_blk_nums=[1, 1, 1]),
}


def _wrapped(name: str) -> nn.Module:
    """A wrapped network whose prior changes its output (perturbed away from the
    identity it starts as), in eval mode."""
    torch.manual_seed(0)
    model = sp.wrap(BACKBONES[name](), teacher=None, student="small")
    with torch.no_grad():
        for p in sp.get_prior(model).parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _outputs(out: object) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(*EXPORT_SIZE, generator=g), torch.rand(*OTHER_SIZE, generator=g)


def _assert_close(got: list, want: object) -> None:
    want = _outputs(want)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        g = torch.as_tensor(g)
        assert g.shape == w.shape
        assert (g - w).abs().max().item() <= TOL


def _onnx_run(data: bytes, x: torch.Tensor) -> list:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _check_trace(model: nn.Module) -> None:
    x, y = _inputs()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer notes
        traced = torch.jit.trace(model, x, check_trace=False)
        _assert_close(_outputs(traced(x)), model(x))
        _assert_close(_outputs(traced(y)), model(y))


def _check_legacy_onnx(model: nn.Module) -> None:
    x, y = _inputs()
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
        _assert_close(_onnx_run(buffer.getvalue(), x), model(x))
        _assert_close(_onnx_run(buffer.getvalue(), y), model(y))


def _dynamic_shapes() -> tuple[dict, ...]:
    dim = torch.export.Dim
    # multiples of 32: the prior's deepest reduction and every backbone's size multiple
    return ({0: dim("batch", min=1, max=8), 2: 32 * dim("h", min=1, max=64),
             3: 32 * dim("w", min=1, max=64)},)


def _check_dynamo_onnx(model: nn.Module, tmp_path) -> None:
    x, y = _inputs()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=_dynamic_shapes(),
                                    verbose=False)
        path = tmp_path / "model.onnx"
        program.save(str(path))
        data = path.read_bytes()
        _assert_close(_onnx_run(data, x), model(x))
        _assert_close(_onnx_run(data, y), model(y))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_trace_of_wrapped_network_equals_eager_at_two_sizes(name, one_thread):
    model = _wrapped(name)
    x, _ = _inputs()
    bare = sp.unwrap(copy.deepcopy(model))
    with torch.no_grad():  # the prior changes the output, so the trace must carry it
        assert (_outputs(bare(x))[-1] - _outputs(model(x))[-1]).abs().max() > 1e-3
    _check_trace(model)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_legacy_onnx_of_wrapped_network_equals_eager_with_dynamic_size(name, one_thread):
    _check_legacy_onnx(_wrapped(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_dynamo_onnx_of_wrapped_network_equals_eager_with_dynamic_size(name, one_thread,
                                                                        tmp_path):
    _check_dynamo_onnx(_wrapped(name), tmp_path)


def test_torch_export_of_wrapped_network_keeps_dynamic_size(one_thread):
    model = _wrapped("UNet")
    x, y = _inputs()
    with torch.no_grad():
        program = torch.export.export(model, (x,), dynamic_shapes=_dynamic_shapes())
        _assert_close(_outputs(program.module()(y)), model(y))


# -- a distilled network exports as the bare one does ----------------------------------
def _distilled(name: str) -> nn.Module:
    x, _ = _inputs()
    return sp.distill_to_backbone(_wrapped(name), [x], steps=1, progress=False)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_distilled_network_traces_and_exports_to_legacy_onnx(name, one_thread):
    model = _distilled(name)
    assert not sp.is_wrapped(model)
    _check_trace(model)
    _check_legacy_onnx(model)


@pytest.mark.slow
def test_distilled_network_exports_with_the_dynamo_exporter(one_thread, tmp_path):
    _check_dynamo_onnx(_distilled("UNet"), tmp_path)
