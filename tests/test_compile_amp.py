"""torch.compile, channels_last and autocast on a wrapped model."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import sp_adapter as sp
from sp_adapter.backbones.unet import UNet

# Inductor compiles C++ for 2-3 minutes on 2 CPU cores; CI checks graph capture and AOT
# autograd with "aot_eager". SP_ADAPTER_TEST_INDUCTOR=1 runs the default backend too.
BACKENDS = ["aot_eager"] + (["inductor"] if os.environ.get("SP_ADAPTER_TEST_INDUCTOR") else [])


def _trained_unet(teacher):
    torch.manual_seed(0)
    net = sp.wrap(UNet(width=8, blocks=1), teacher=teacher)
    for embedding in net.sp_prior.embeddings.values():  # a prior that changes the output
        torch.nn.init.normal_(embedding.fusion.conv1.weight, std=0.1)
        torch.nn.init.normal_(embedding.fusion.conv2.weight, std=0.1)
    return net


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_wrapped_model_matches_eager(teacher, backend):
    net = _trained_unet(teacher).eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    compiled = torch.compile(net, backend=backend)
    with torch.no_grad():
        for scale in (1.0, 0.5):
            eager = net(x * scale)
            with sp.prior_disabled(net):
                plain = net(x * scale)
            out = compiled(x * scale)
            assert not torch.allclose(eager, plain)  # the prior is active in both
            torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    # training through the compiled model: prior_loss sees the compiled forward's priors
    net.train()
    sharp = torch.rand_like(x)
    loss = F.l1_loss(compiled(x), sharp) + 0.1 * sp.prior_loss(compiled, sharp)
    loss.backward()
    grads = [p.grad for p in net.sp_prior.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_channels_last_gives_the_same_output(teacher):
    net = _trained_unet(teacher).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference = net(x)
        net = net.to(memory_format=torch.channels_last)
        out = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def test_bfloat16_autocast_trains_and_stays_close(teacher):
    net = _trained_unet(teacher)
    x, sharp = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference = net(x)
    seen = []
    net.dec1.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
        loss = F.l1_loss(out.float(), sharp) + 0.1 * sp.prior_loss(net, sharp)
    loss.backward()
    assert seen == [torch.bfloat16]  # the modulated decoder feature stays in bf16
    assert torch.isfinite(loss)
    assert (out.float() - reference).abs().max() < 0.1
    sat = net.sp_prior.embeddings["level1"].fusion
    assert sat.conv1.weight.grad is not None and sat.conv1.weight.grad.abs().sum() > 0
