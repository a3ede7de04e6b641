"""Safe loading: nothing a user hands us is unpickled, no hub code runs unasked, mismatched checkpoints are refused.

1. The code itself (AST scan of ``user_embed/``, ``data_pipelines/``, ``benchmarks/``): no pickle-family
   imports, every ``torch.load`` passes ``weights_only=True``, no ``np.load(allow_pickle=True)``, no
   ``yaml.load``/``unsafe_load``, and ``trust_remote_code`` is never hard-coded to True.
2. Each loader refuses a file that would run code: an embedder whose ``model.safetensors`` is a
   pickle, a Lightning checkpoint holding a pickled callable, an LLM folder that only has
   ``pytorch_model.bin``, and an LLM folder whose config asks for its own Python code.
3. ``--ckpt_path`` is read weights-only and a checkpoint trained with another model config is refused.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import lightning.pytorch  # noqa: F401  (import before any capsys test: its log handler keeps that stderr)
import pytest
import torch
import yaml

from user_embed.cli import main
from user_embed.config import LLMConfig
from user_embed.errors import CheckpointError, UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("user_embed", "data_pipelines", "benchmarks")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}


class Exploit:
    """Unpickling this creates ``marker``: proof that a loader executed code from a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# --------------------------------------------------------------------------- 1. the code


def python_files() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (REPO / folder).rglob("*.py") if ".venv" not in p.parts)


def dotted(node: ast.AST) -> str:
    """``torch.load`` for Attribute(Name('torch'), 'load'); '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loading(path: Path) -> list[str]:
    """Problems in one file as 'path:line: what'."""
    problems = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bad = [n for n in names if n.split(".")[0] in PICKLE_MODULES]
            if bad:
                problems.append(f"{where}:{node.lineno}: imports {bad[0]}")
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        if name == "torch.load":
            if not is_true(keyword(node, "weights_only")):
                problems.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
        numpy_load = name in ("np.load", "numpy.load")
        if numpy_load and is_true(keyword(node, "allow_pickle")):
            problems.append(f"{where}:{node.lineno}: np.load(allow_pickle=True)")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            problems.append(f"{where}:{node.lineno}: {name} (use yaml.safe_load)")
        if name.endswith(("read_pickle", "load_pickle")):
            problems.append(f"{where}:{node.lineno}: {name}")
        if is_true(keyword(node, "trust_remote_code")):
            problems.append(f"{where}:{node.lineno}: trust_remote_code=True hard-coded")
    return problems


def test_scanner_catches_what_it_looks_for(tmp_path):
    """The scan must be able to fail: a file with six forbidden patterns is flagged six times."""
    bad = tmp_path / "unsafe.py"
    bad.write_text("import pickle\nimport torch, numpy as np, yaml\n"
                   "torch.load('x')\ntorch.load('x', weights_only=False)\nnp.load('x', allow_pickle=True)\n"
                   "yaml.load('a')\nf(trust_remote_code=True)\ntorch.load('y', weights_only=True)\n")
    problems = unsafe_loading(bad)
    assert len(problems) == 6, problems  # the last torch.load is fine


def test_the_code_never_unpickles_and_never_trusts_remote_code_by_itself():
    files = python_files()
    assert len(files) > 40  # the scan really covers the package
    problems = [p for path in files for p in unsafe_loading(path)]
    assert not problems, "\n".join(problems)


def test_trust_remote_code_defaults_to_off():
    assert LLMConfig().trust_remote_code is False


# --------------------------------------------------------------------------- 2. loaders refuse code


def test_embedder_weights_that_are_a_pickle_are_not_unpickled(tmp_path, tiny_llm_dir, tiny_data_dir):
    from user_embed.embedder import UserEmbedder
    from test_bad_input import build_embedder

    folder = build_embedder(tiny_llm_dir, tiny_data_dir, tmp_path / "embedder")
    marker = tmp_path / "pwned"
    torch.save({"weights": Exploit(marker)}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        UserEmbedder.from_pretrained(folder)
    assert not marker.exists()


def test_llm_folder_with_only_pytorch_model_bin_is_refused(tmp_path, tiny_llm_dir):
    from user_embed.llm.load import load_llm

    folder = tmp_path / "bin-llm"
    shutil.copytree(tiny_llm_dir, folder)
    from safetensors.torch import load_file

    marker = tmp_path / "pwned"
    state = load_file(folder / "model.safetensors")
    torch.save({**state, "exploit": Exploit(marker)}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no safetensors weights"):
        load_llm(LLMConfig(name_or_path=str(folder)))
    assert not marker.exists()


def test_llm_folder_with_its_own_code_needs_trust_remote_code(tmp_path, tiny_llm_dir):
    """A config that names Python code in the folder (auto_map) is refused, and that code never runs."""
    from user_embed.llm.load import load_llm

    folder = tmp_path / "custom-llm"
    shutil.copytree(tiny_llm_dir, folder)
    marker = tmp_path / "pwned"
    (folder / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil-llm", architectures=["EvilForCausalLM"],
                  auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="trust_remote_code"):
        load_llm(LLMConfig(name_or_path=str(folder)))
    assert not marker.exists()


# --------------------------------------------------------------------------- 3. Lightning checkpoints


def fit_config(root: Path, llm: Path, data: Path, adapter_dim: int = 32) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"max_steps": 1, "accelerator": "cpu", "devices": 1, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0,
                    "num_sanity_val_steps": 0, "default_root_dir": str(root / "runs"),
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(root / "runs" / "checkpoints"), "save_last": True}}]},
        "model": {"sources": [{"kind": "sequence", "name": "ratings", "dim": 32, "layers": 1, "heads": 2,
                               "max_len": 8}],
                  "adapter": {"kind": "resampler", "num_tokens": 2, "dim": adapter_dim, "layers": 1, "heads": 2,
                              "user_dim": 16},
                  "llm": {"name_or_path": str(llm)}, "loss": {"contrastive_weight": 0.0},
                  "export_dir": str(root / "runs" / "embedder")},
        "data": {"data_dir": str(data), "batch_size": 4, "max_history": 8, "item_text_vectors": False,
                 "contrastive_texts": False},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "fit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llm_dir):
    """A 1-step fit: its config and last.ckpt."""
    from conftest import write_tiny_dataset

    root = tmp_path_factory.mktemp("safe-ckpt")
    data = write_tiny_dataset(root / "data")
    config = fit_config(root / "first", tiny_llm_dir, data)
    assert main(["fit", "--config", str(config)]) == 0
    return {"root": root, "data": data, "config": config, "last": root / "first" / "runs" / "checkpoints" / "last.ckpt"}


def test_resume_reads_the_checkpoint_weights_only(trained, monkeypatch):
    """`--ckpt_path` reaches Trainer.fit with weights_only=True (Lightning's default would leave it to torch)."""
    import lightning.pytorch as pl

    seen = {}

    def record(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path=None,
               weights_only=None):
        seen.update(ckpt_path=ckpt_path, weights_only=weights_only)

    monkeypatch.setattr(pl.Trainer, "fit", record)
    assert main(["fit", "--config", str(trained["config"]), "--ckpt_path", str(trained["last"])]) == 0
    assert seen == {"ckpt_path": str(trained["last"]), "weights_only": True}


def test_checkpoint_with_pickled_code_is_refused(trained, tmp_path, capsys):
    checkpoint = torch.load(trained["last"], map_location="cpu", weights_only=True)
    marker = tmp_path / "pwned"
    checkpoint["callbacks"]["evil"] = Exploit(marker)
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    assert main(["fit", "--config", str(trained["config"]), "--ckpt_path", str(tmp_path / "evil.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "evil.ckpt: not a readable, weights-only checkpoint" in err and "Traceback" not in err
    assert not marker.exists()


def test_checkpoint_trained_with_another_model_config_is_refused(trained, tiny_llm_dir, capsys):
    other = fit_config(trained["root"] / "other", tiny_llm_dir, trained["data"], adapter_dim=64)
    assert main(["fit", "--config", str(other), "--ckpt_path", str(trained["last"])]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "model.adapter.dim = 32" in lines[0] and "gives 64" in lines[0], err
    assert not (trained["root"] / "other" / "runs" / "checkpoints").exists()  # refused before any training
