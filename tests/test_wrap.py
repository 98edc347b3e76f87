"""wrap / unwrap / prior_loss on the paper's UNet: exactness, gradients, state, errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import sp_adapter as sp
from sp_adapter.backbones.unet import UNet


def _unet() -> UNet:
    torch.manual_seed(0)
    return UNet(width=16, blocks=1)


def _hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"fusion": "add"},
        {"fusion": "concat"},
        {"clc": False, "mla": False},
        {"student": "small"},
    ],
)
def test_wrapped_output_is_bit_exact_at_init(teacher, pair, options):
    net = _unet()
    blurry, _ = pair
    reference = net(blurry)
    sp.wrap(net, teacher=teacher, **options)
    assert torch.equal(net(blurry), reference)


def test_unwrap_restores_state_dict_outputs_and_hooks(teacher, pair):
    net = _unet()
    blurry, sharp = pair
    state = copy.deepcopy(net.state_dict())
    reference = net(blurry)
    assert _hook_count(net) == 0
    sp.wrap(net, teacher=teacher)
    # train a little so the prior changes the output, then unwrap
    opt = torch.optim.Adam(net.sp_prior.parameters(), lr=1e-2)
    for _ in range(2):
        loss = F.l1_loss(net(blurry), sharp) + 0.1 * sp.prior_loss(net, sharp)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(net(blurry), reference)
    assert set(net.state_dict()) == set(state) | {f"sp_prior.{k}" for k in sp.prior_state_dict(net)}
    original = sp.unwrap(net)
    assert original is net
    assert _hook_count(net) == 0
    assert not hasattr(net, "sp_prior") and not sp.is_wrapped(net)
    restored = net.state_dict()
    assert list(restored) == list(state)
    assert all(torch.equal(restored[k], state[k]) for k in state)
    assert torch.equal(net(blurry), reference)


def test_base_state_dict_keys_unchanged_and_parameters_include_prior(teacher):
    net = _unet()
    keys = list(net.state_dict())
    base_params = {id(p) for p in net.parameters()}
    sp.wrap(net, teacher=teacher)
    assert list(net.state_dict())[: len(keys)] == keys
    prior_params = {id(p) for p in net.sp_prior.parameters()}
    assert prior_params and prior_params <= {id(p) for p in net.parameters()}
    assert not prior_params & base_params
    # the teacher is never part of the wrapped model
    teacher_params = {id(p) for p in teacher.parameters()}
    assert not teacher_params & {id(p) for p in net.parameters()}
    assert not any(k.startswith("teacher") for k in net.state_dict())


@pytest.mark.parametrize("options", [{}, {"fusion": "add"}, {"fusion": "concat"}])
def test_every_prior_parameter_gets_a_gradient_within_three_steps(teacher, pair, options):
    net = _unet()
    blurry, sharp = pair
    sp.wrap(net, teacher=teacher, **options)
    prior = net.sp_prior
    named = {n: p for n, p in prior.named_parameters() if p.requires_grad}
    seen = dict.fromkeys(named, False)
    step0_mla = None
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for step in range(3):
        opt.zero_grad()
        loss = F.l1_loss(net(blurry), sharp) + 0.1 * sp.prior_loss(net, sharp)
        loss.backward()
        for n, p in named.items():
            if p.grad is not None and p.grad.abs().sum() > 0:
                seen[n] = True
        if step == 0 and options == {}:
            step0_mla = [named[n].grad for n in named if ".mla." in n]
        opt.step()
    missing = [n for n, ok in seen.items() if not ok]
    assert not missing, f"no gradient within 3 steps: {missing}"
    for kind in ("learner.student", "learner.clc", "embeddings.level1.fusion"):
        assert any(n.startswith(kind) for n in named)
    if step0_mla is not None:  # zero-initialised SAT blocks MLA's gradient at step 0 only
        assert all(g is None or g.abs().sum() == 0 for g in step0_mla)


def test_thirty_steps_lower_the_loss_and_change_the_output(teacher, pair):
    net = _unet()
    blurry, sharp = pair
    sp.wrap(net, teacher=teacher)
    with torch.no_grad():
        before = net(blurry)
    opt = torch.optim.AdamW(net.parameters(), lr=5e-4)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.l1_loss(net(blurry), sharp) + 0.1 * sp.prior_loss(net, sharp)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    with torch.no_grad():
        after = net(blurry)
    assert (after - before).abs().max() > 1e-3


def _trained(teacher, pair, steps=3):
    net = _unet()
    blurry, sharp = pair
    sp.wrap(net, teacher=teacher)
    opt = torch.optim.Adam(net.sp_prior.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.l1_loss(net(blurry), sharp) + sp.prior_loss(net, sharp)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def test_state_is_reset_at_every_forward(teacher, pair):
    net = _trained(teacher, pair)
    a, _ = pair
    b = torch.rand_like(a)
    with torch.no_grad():
        fresh_b = copy.deepcopy(net)(b)
        fresh_a = copy.deepcopy(net)(a)
        out_a, out_b = net(a), net(b)
        assert torch.equal(out_a, fresh_a) and torch.equal(out_b, fresh_b)
        # prior of the last forward belongs to b, not a
        priors_b = net.sp_prior(b)
        state = sp.get_hook(net).state(b.device)
        assert all(torch.equal(p, q) for p, q in zip(state.priors, priors_b, strict=True))
        # a forward that raises half-way does not leak into the next one
        original = net.dec2.forward

        def broken(x):
            raise RuntimeError("boom")

        net.dec2.forward = broken
        with pytest.raises(RuntimeError, match="boom"):
            net(a)
        net.dec2.forward = original
        assert not sp.get_hook(net).state(a.device).skips
        assert torch.equal(net(b), fresh_b)


def test_prior_disabled_runs_the_base_network(teacher, pair):
    net = _trained(teacher, pair)
    blurry, _ = pair
    with torch.no_grad():
        wrapped = net(blurry)
        with sp.prior_disabled(net):
            plain = net(blurry)
        clone = sp.unwrap(copy.deepcopy(net))
        assert torch.equal(plain, clone(blurry))
        assert not torch.equal(plain, wrapped)


def test_prior_loss_is_hcl_of_student_vs_teacher(teacher, pair):
    net = _unet()
    blurry, sharp = pair
    sp.wrap(net, teacher=teacher)
    net(blurry)
    expected = sp.hcl_loss(net.sp_prior(blurry), teacher(sharp), (1, 2, 4))
    assert torch.allclose(sp.prior_loss(net, sharp), expected)
    cached = teacher(sharp)
    assert torch.allclose(sp.prior_loss(net, sharp, targets=cached), expected)


def test_hcl_switch_off_gives_zero_prior_loss(teacher, pair):
    net = _unet()
    blurry, sharp = pair
    sp.wrap(net, teacher=teacher, hcl=False)
    net(blurry)
    assert sp.prior_loss(net, sharp).item() == 0.0


# -- errors ---------------------------------------------------------------------------


def test_unknown_level_name_lists_close_names(teacher):
    net = _unet()
    with pytest.raises(ValueError, match=r"'up_1' does not exist.*'up1'"):
        sp.wrap(net, [sp.Level(site="up_1", skip="enc1", channels=16)], teacher=teacher)
    with pytest.raises(ValueError, match=r"no level 'level9'.*level1"):
        sp.wrap(net, ["level9"], teacher=teacher)
    assert not sp.is_wrapped(net) and not hasattr(net, "sp_prior")


def test_channel_mismatch_names_the_level(teacher, pair):
    net = _unet()
    sp.wrap(net, [sp.Level(site="up1", skip="enc1", channels=17)], teacher=teacher)
    with pytest.raises(ValueError, match=r"level 'level1'.*'up1'.*16 channels.*17"):
        net(pair[0])


def test_wrap_twice_is_an_error(teacher):
    net = sp.wrap(_unet(), teacher=teacher)
    with pytest.raises(ValueError, match="already wrapped"):
        sp.wrap(net, teacher=teacher)


@pytest.mark.parametrize(
    "bad", [torch.rand(3, 64, 64), torch.rand(1, 1, 3, 64, 64), torch.rand(1, 4, 64, 64)]
)
def test_non_image_input_is_an_error(teacher, bad):
    net = sp.wrap(_unet(), teacher=teacher)
    with pytest.raises(ValueError, match=r"Bx3xHxW"):
        net(bad)


def test_prior_loss_before_any_forward_is_an_error(teacher, pair):
    net = sp.wrap(_unet(), teacher=teacher)
    with pytest.raises(RuntimeError, match="no forward"):
        sp.prior_loss(net, pair[1])
    net(pair[0])
    with pytest.raises(ValueError, match="shape"):
        sp.prior_loss(net, pair[1][:1])


def test_unwrap_of_plain_model_and_missing_teacher_are_errors(pair):
    with pytest.raises(ValueError, match="not wrapped"):
        sp.unwrap(_unet())
    net = sp.wrap(_unet(), teacher=None, student="small")
    net(pair[0])
    with pytest.raises(RuntimeError, match=r"no teacher.*teacher=sp_adapter\.TeacherSpec\(\)"):
        sp.prior_loss(net, pair[1])


def _trained_looking_prior(model: torch.nn.Module) -> None:
    """Non-zero CLC and SAT weights, as after training (at init they are exactly zero)."""
    g = torch.Generator().manual_seed(5)
    for name, p in sp.get_prior(model).named_parameters():
        if "student" not in name:
            p.data = 0.3 * torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("levels", [None, [0, 1, 2]])
def test_prior_is_aligned_with_images_of_any_size(teacher, levels, one_thread):
    """An image whose sides are no multiple of the prior's deepest reduction (16 for the
    default teacher levels 1-3, 8 for 0-2) is deblurred as if the user had padded it
    (reflect, bottom and right) to one: the prior learner pads its input so, the UNet pads
    its own to a multiple of 4, and the maps are resized to each decoder level aligned
    with the image. Before this alignment such sides shifted the modulation everywhere
    in the image (by a few grey levels in a trained model)."""
    from sp_adapter.prior.config import TeacherSpec
    from sp_adapter.prior.teacher import Teacher, build_feature_model

    deepest = 16
    if levels is not None:
        spec = TeacherSpec(out_indices=tuple(levels))
        t = Teacher(build_feature_model(spec), name=spec.arch)
        t.calibrate([F.avg_pool2d(torch.rand(1, 3, 64, 64), 5, 1, 2)[0]])
        deepest = 8
    else:
        t = teacher
    model = sp.wrap(_unet(), teacher=t).eval()
    _trained_looking_prior(model)
    g = torch.Generator().manual_seed(2)
    image = F.avg_pool2d(torch.rand(1, 3, 110, 141, generator=g), 5, 1, 2)
    with torch.no_grad():
        for h, w in ((110, 141), (106, 130), (96, 131)):
            x = image[..., :h, :w]
            padded = F.pad(x, (0, -w % deepest, 0, -h % deepest), mode="reflect")
            out, ref = model(x), model(padded)[..., :h, :w]
            # away from the bottom and right, where the UNet's own padding may differ
            diff = (out - ref)[..., : h - 32, : w - 32].abs().max()
            assert diff < 1e-4, (h, w, float(diff))
        # the teacher's targets cover the same pixels as the priors: the image padded
        model(image)
        assert sp.prior_loss(model, image).isfinite()
        padded = F.pad(image, (0, -141 % deepest, 0, -110 % deepest), mode="reflect")
        for a, b in zip(t(image), t(padded), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("fusion", ["sat", "add", "concat"])
def test_prior_strength_scales_each_change_and_zero_is_the_bare_network(teacher, pair, fusion):
    """``set_prior_strength(s)``: every SPE adds ``s`` times its change to its level (exact
    at 0 and 1); 0 runs the network as unwrapped; the context manager restores it."""
    net = _unet()
    blurry, _ = pair
    sp.wrap(net, teacher=teacher, fusion=fusion)
    _trained_looking_prior(net)
    net.eval()
    spe = next(iter(sp.get_prior(net).embeddings.values()))
    priors = sp.get_prior(net)(blurry)
    h = torch.randn(2, spe.channels, 16, 16, generator=torch.Generator().manual_seed(1))
    g = h + 0.5
    maps = spe.maps(priors)
    full = spe(h, g, maps) - h
    assert full.abs().max() > 1e-3  # the prior does change h
    assert torch.equal(spe(h, g, maps, strength=1.0), spe(h, g, maps))
    assert torch.equal(spe(h, g, maps, strength=0.0), h)
    assert torch.allclose(spe(h, g, maps, strength=0.3) - h, 0.3 * full, atol=1e-6)
    with torch.no_grad():
        trained = net(blurry)
        bare = sp.unwrap(copy.deepcopy(net))(blurry)
        with sp.prior_strength(net, 0.0):
            assert torch.equal(net(blurry), bare)
        with sp.prior_strength(net, 0.5):
            half = net(blurry)
        assert torch.equal(net(blurry), trained)  # restored after the block
        assert not torch.equal(half, trained) and not torch.equal(half, bare)
        sp.set_prior_strength(net, 0.5)
        assert torch.equal(net(blurry), half)
        assert torch.equal(copy.deepcopy(net)(blurry), half)  # a copy keeps the setting
        assert sp.get_prior(net).strength == 0.5


def test_strength_jitter_draws_one_strength_per_image_in_training_only(teacher, pair):
    """``PriorConfig.strength_jitter = a``: in training mode image i of a batch is
    modulated at its own strength s_i, uniform in [1 - a, 1 + a] times the prior's
    strength; in eval mode the network is the one without jitter, bit for bit."""
    blurry, _ = pair
    blurry = torch.cat([blurry, blurry.flip(-1), blurry.flip(-2)])
    plain, jittered = _unet(), _unet()
    sp.wrap(plain, teacher=teacher)
    sp.wrap(jittered, teacher=teacher, strength_jitter=0.5)
    _trained_looking_prior(plain)
    _trained_looking_prior(jittered)
    prior = sp.get_prior(jittered)
    drawn = []
    sample = prior.sample_strengths
    prior.sample_strengths = lambda *a: drawn.append(sample(*a)) or drawn[-1]
    with torch.no_grad():
        plain.eval(), jittered.eval()
        assert torch.equal(jittered(blurry), plain(blurry))
        assert drawn == [1.0]
        jittered.train()
        out = jittered(blurry)
        strengths = drawn[-1].flatten().tolist()
        assert len(set(strengths)) == len(blurry) and all(0.5 <= s <= 1.5 for s in strengths)
        plain.eval()
        for i, s in enumerate(strengths):
            with sp.prior_strength(plain, s):
                assert torch.allclose(out[i], plain(blurry[i : i + 1])[0], atol=2e-4)
        assert not torch.equal(jittered(blurry), out)  # a new draw each forward
    # the draws: uniform on [1 - a, 1 + a] times the strength
    prior.strength = 0.5
    many = sample(20000, torch.device("cpu")).flatten()
    assert many.shape == (20000,)
    assert 0.25 <= many.min() < 0.26 and 0.74 < many.max() <= 0.75
    assert many.mean() == pytest.approx(0.5, abs=0.005)
    assert many.std() == pytest.approx(0.25 / 3**0.5, rel=0.03)
    # the gradient reaches the prior through every image's strength
    jittered.train()
    jittered(blurry).mean().backward()
    assert all(p.grad is not None for p in prior.embeddings.parameters())
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"strength_jitter must be in \[0, 1\]"):
            sp.wrap(_unet(), teacher=teacher, strength_jitter=bad)


class _DoublingNet(torch.nn.Module):
    """Runs its stem on the batch and its flipped copy (2B images inside the network)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stem(torch.cat([x, x.flip(-1)]))
        a, b = features.chunk(2)
        return x + self.head(a + b.flip(-1))


def test_a_level_that_sees_another_batch_is_refused_naming_it(teacher, pair):
    """The prior's maps (and a jittered strength) are one per input image: a network
    that runs a level on more images than it received gets a clear error, not a
    broadcasting one."""
    blurry, _ = pair
    net = sp.wrap(_DoublingNet(), [sp.Level(site="stem", channels=8)], teacher=teacher,
                  student="small", strength_jitter=0.5)
    for mode in (net.eval, net.train):
        mode()
        with pytest.raises(ValueError, match=r"level 'level1' \(output of 'stem'\) has batch 4 "
                                             r"but the blurry input had 2: the prior's maps"):
            net(blurry)


def test_prior_strength_refuses_bad_values(teacher, pair):
    from sp_adapter.errors import PriorStrengthError
    from sp_adapter.prior.semantic_prior import MAX_STRENGTH

    net = sp.wrap(_unet(), teacher=teacher).eval()
    for bad in (-0.1, float("nan"), float("inf"), 1e30, MAX_STRENGTH * 1.001, "x"):
        with pytest.raises(PriorStrengthError, match=r"finite number >= 0 and <= 10 .*overflow"):
            sp.set_prior_strength(net, bad)
        with pytest.raises(PriorStrengthError), sp.prior_strength(net, bad):
            pass
    assert sp.get_prior(net).strength == 1.0
    # the largest accepted strength keeps a prior with non-zero changes finite
    torch.manual_seed(3)
    with torch.no_grad():
        for module in sp.get_prior(net).modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0, 0.2)
    sp.set_prior_strength(net, MAX_STRENGTH)
    with torch.no_grad():
        out = net(pair[0])
    assert torch.isfinite(out).all()
    with torch.no_grad(), sp.prior_strength(net, 1.0):
        plain = net(pair[0])
    assert not torch.allclose(out, plain)  # the strength really scaled a non-zero change
    with pytest.raises(ValueError, match="not wrapped|no prior|wrap"):
        sp.set_prior_strength(_unet(), 0.5)
