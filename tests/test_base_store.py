"""BaseStore: a stored shared base gives the arms exactly what training it again gives."""

from __future__ import annotations

import shutil

import pytest
import torch
from test_benchmarks import load
from test_trainer import Pairs, config, losses_of

import sp_adapter
from sp_adapter.train import Arm, Trainer, run_arms

BaseStore = load("base_store").BaseStore

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIONS = {"width": 8, "blocks": 1}


def arms() -> list[Arm]:
    return [Arm("base"), Arm("sp", prior=sp_adapter.PriorConfig(student="small", small_width=8))]


def run(teacher, store: BaseStore | None, **kw):
    return run_arms(arms(), Pairs(8), Pairs(2, seed=1), config(**kw), teacher=teacher,
                    options=OPTIONS, pretrain_steps=3, arm_steps=2, base_store=store)


def test_a_stored_base_replaces_its_training_bit_for_bit(teacher, tmp_path, monkeypatch):
    store = BaseStore(tmp_path / "bases", {"set": "pairs", "n": 8})
    fresh = run(teacher, None)
    first = run(teacher, store)
    files = list((tmp_path / "bases").glob("base-*.safetensors"))
    assert len(files) == 1 and all(r.shared_from is None for r in first)

    fits = []
    original_fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self: fits.append(self.name) or original_fit(self))
    # validation every step: a setting that does not change the base, so it is found
    again = run(teacher, store, val_every=1)
    assert fits == ["base", "sp"]  # the shared steps did not train again
    for x, y, z in zip(fresh, first, again, strict=True):
        assert z.shared_from == str(files[0]) and z.summary()["shared_from"] == str(files[0])
        assert z.shared_seconds == pytest.approx(y.shared_seconds)  # the recorded compute
        assert x.evaluation.psnr == y.evaluation.psnr == z.evaluation.psnr
        assert losses_of(x.history) == losses_of(z.history)
        for p, q in zip(x.model.state_dict().values(), z.model.state_dict().values(),
                        strict=True):
            assert torch.equal(p, q)

    fits.clear()
    run(teacher, store, lr=1e-3)  # another learning rate is another base
    assert fits == ["pretrain", "base", "sp"]
    assert len(list((tmp_path / "bases").glob("base-*.safetensors"))) == 2


def test_the_key_holds_what_decides_the_base_and_a_foreign_file_is_refused(tmp_path):
    store = BaseStore(tmp_path, {"set": "pairs"})
    key = store.key("unet", OPTIONS, config())
    assert store.key("unet", OPTIONS, config(progress=True, val_every=5, beta=0.3,
                                             backbone_lr_scale=0.1)) == key
    for other in (store.key("unet", OPTIONS, config(seed=1)),
                  store.key("unet", {"width": 9, "blocks": 1}, config()),
                  BaseStore(tmp_path, {"set": "other"}).key("unet", OPTIONS, config())):
        assert store.path(other) != store.path(key)
    assert store.load(key) is None
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    stored = store.load(key) if store.save(key, state, 1.5) else None
    assert torch.equal(stored.state["w"], state["w"]) and stored.seconds == 1.5

    seeded = store.key("unet", OPTIONS, config(seed=7))
    shutil.copy(store.path(key), store.path(seeded))  # a file under another key's name
    with pytest.raises(ValueError, match="base of another configuration"):
        store.load(seeded)
