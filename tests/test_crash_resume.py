"""Crash-safe training: SIGKILL a `user-embed fit` midway, resume from last.ckpt, end where an uninterrupted run ends.

The run is the tiny model (2-layer Llama, sequence + profile encoders with dropout 0.2, so the
random stream matters) in deterministic CPU mode, with a checkpoint after every step and a
validation at each epoch end. A subprocess trains with a helper callback that slows each step
(so "midway" is reliable) and is killed with SIGKILL as soon as a mid-run checkpoint exists.
Meanwhile the same config runs uninterrupted in-process. Then the killed run is resumed with
``--ckpt_path last.ckpt``: its logged losses and validation metrics, its final checkpoint and
the exported embedder weights must equal the uninterrupted run's exactly. Every checkpoint left
by the killed process must load (weights-only) — none half-written.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch  # noqa: F401  (import before any capsys test: its log handler keeps that stderr)
import pytest
import torch
import yaml
from safetensors.torch import load_file

from user_embed.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_STEPS = 9  # 4 training batches per epoch: the run crosses two epoch ends (validation) and stops mid-epoch
KILL_AFTER_STEP = 3

SLOW_CALLBACK = '''
import time
from lightning.pytorch.callbacks import Callback


class SlowSteps(Callback):
    """Sleeps after each training step so the test can kill the process between checkpoints."""

    def on_train_batch_end(self, trainer, *args):
        time.sleep(0.25)
'''


def write_config(root: Path, llm: Path, data: Path, slow: bool = False) -> Path:
    runs = root / "runs"
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(runs / "checkpoints"), "save_last": True, "every_n_train_steps": 1,
                                "save_top_k": -1}}]
    if slow:
        callbacks.append({"class_path": "slow_steps.SlowSteps"})
    config = {
        "seed_everything": 7,
        "trainer": {"max_steps": MAX_STEPS, "accelerator": "cpu", "devices": 1, "precision": "32-true",
                    "deterministic": True, "log_every_n_steps": 1, "num_sanity_val_steps": 0,
                    "limit_val_batches": 1, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(runs),
                    "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                "init_args": {"save_dir": str(runs), "name": "logs", "version": ""}}],
                    "callbacks": callbacks},
        "model": {"sources": [{"kind": "sequence", "name": "ratings", "dim": 32, "layers": 1, "heads": 2,
                               "max_len": 8, "dropout": 0.2},
                              {"kind": "tabular", "name": "profile", "dim": 16, "heads": 2, "dropout": 0.2}],
                  "adapter": {"kind": "resampler", "num_tokens": 2, "dim": 32, "layers": 1, "heads": 2,
                              "user_dim": 16, "dropout": 0.1},
                  "llm": {"name_or_path": str(llm)}, "loss": {"contrastive_weight": 0.0},
                  "optim": {"lr": 0.01, "warmup_steps": 2}, "export_dir": str(runs / "embedder")},
        "data": {"data_dir": str(data), "batch_size": 4, "eval_batch_size": 4, "max_history": 8,
                 "item_text_vectors": False, "contrastive_texts": False, "seed": 3},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "fit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def logged(run_dir: Path) -> dict[tuple[int, str], float]:
    """Every logged value of the CSV logger as {(step, name): value}."""
    out = {}
    with open(run_dir / "logs" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for name, value in row.items():
                if name not in ("epoch", "step") and value:
                    out[(int(row["step"]), name)] = float(value)
    return out


def step_of(path: Path) -> int:
    return int(path.stem.split("step=")[1])


def start_killable_run(root: Path, llm: Path, data: Path) -> subprocess.Popen:
    (root / "helpers").mkdir(parents=True)
    (root / "helpers" / "slow_steps.py").write_text(SLOW_CALLBACK)
    config = write_config(root / "killed", llm, data, slow=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "helpers"), *sys.path]),
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline")
    log = open(root / "killed.log", "w")
    return subprocess.Popen([sys.executable, "-m", "user_embed.cli", "fit", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)


def kill_midway(process: subprocess.Popen, checkpoints: Path, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended before it could be killed (exit {process.returncode})")
        if any(step_of(p) >= KILL_AFTER_STEP for p in checkpoints.glob("*step=*.ckpt")):
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            assert process.returncode == -signal.SIGKILL
            return
        time.sleep(0.02)
    process.kill()
    pytest.fail("no mid-run checkpoint appeared in time")


@pytest.mark.timeout(600)
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, tiny_llm_dir, tiny_data_dir, capsys):
    process = start_killable_run(tmp_path, tiny_llm_dir, tiny_data_dir)
    try:
        # the uninterrupted reference, in-process while the subprocess starts up
        reference = write_config(tmp_path / "reference", tiny_llm_dir, tiny_data_dir)
        assert main(["fit", "--config", str(reference)]) == 0, capsys.readouterr().err
        killed_ckpts = tmp_path / "killed" / "runs" / "checkpoints"
        kill_midway(process, killed_ckpts)
    finally:
        if process.poll() is None:
            process.kill()
    log = (tmp_path / "killed.log").read_text()

    # nothing half-written: every checkpoint file the killed process left loads, weights-only
    left = sorted(killed_ckpts.glob("*.ckpt"))
    assert left and (killed_ckpts / "last.ckpt") in left, log
    for path in left:
        torch.load(path, map_location="cpu", weights_only=True)
    stopped_at = torch.load(killed_ckpts / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert 0 < stopped_at < MAX_STEPS, "the kill did not land midway"  # last.ckpt is written after step=N.ckpt
    killed_run = tmp_path / "killed" / "runs"
    assert not (killed_run / "embedder").exists()  # the export only happens at a finished fit

    # resume (same config, without the slowing callback) from the last checkpoint
    resumed_config = write_config(tmp_path / "killed", tiny_llm_dir, tiny_data_dir)
    code = main(["fit", "--config", str(resumed_config), "--ckpt_path", str(killed_ckpts / "last.ckpt")])
    assert code == 0, capsys.readouterr().err

    reference_run = tmp_path / "reference" / "runs"
    expected, got = logged(reference_run), logged(killed_run)
    assert any(name == "val/accuracy" for _, name in expected)
    after_resume = {key: value for key, value in got.items() if key[0] >= stopped_at}
    assert after_resume, got
    assert {k: expected[k] for k in after_resume} == after_resume  # losses and metrics after the resume: identical
    final_expected = torch.load(reference_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    final_got = torch.load(killed_ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert final_got["global_step"] == final_expected["global_step"] == MAX_STEPS
    for key, tensor in final_expected["state_dict"].items():
        assert torch.equal(tensor, final_got["state_dict"][key]), key
    embedder_expected = load_file(reference_run / "embedder" / "model.safetensors")
    embedder_got = load_file(killed_run / "embedder" / "model.safetensors")
    assert embedder_expected.keys() == embedder_got.keys()
    assert all(torch.equal(embedder_expected[k], embedder_got[k]) for k in embedder_expected)
    print(f"killed at step {stopped_at} of {MAX_STEPS}; resumed run equals the uninterrupted one "
          f"({len(after_resume)} logged values, {len(embedder_got)} embedder tensors)")


# --------------------------------------------------------------------------- the pieces that make it work


def test_shuffle_depends_only_on_seed_and_epoch_and_resumes_mid_epoch():
    from user_embed.data.sampler import ResumableSampler

    def epoch_batches(sampler: ResumableSampler) -> list[list[int]]:
        order = list(sampler)
        return [order[i:i + 4] for i in range(0, len(order), 4)]

    sampler = ResumableSampler(10, batch_size=4, seed=5)
    first, second = epoch_batches(sampler), epoch_batches(sampler)  # no set_epoch: each iteration is a new epoch
    assert sorted(sum(first, [])) == list(range(10)) and first != second
    assert epoch_batches(ResumableSampler(10, 4, seed=5)) == first  # a fresh sampler: the same epoch 0
    assert epoch_batches(ResumableSampler(10, 4, seed=6)) != first

    # two batches of epoch 1 trained, then a checkpoint: the resumed sampler serves batch 3 of epoch 1
    sampler.set_epoch(1)
    iter(sampler)
    sampler.mark_consumed(), sampler.mark_consumed()
    state = sampler.state_dict()
    resumed = ResumableSampler(10, 4, seed=5)
    resumed.load_state_dict(state)
    assert epoch_batches(resumed) == second[2:]
    # a checkpoint after the last batch of an epoch resumes at the start of the next epoch
    sampler.mark_consumed()
    at_end = ResumableSampler(10, 4, seed=5)
    at_end.load_state_dict(sampler.state_dict())
    reference = ResumableSampler(10, 4, seed=5)
    reference.set_epoch(2)
    assert epoch_batches(at_end) == epoch_batches(reference)


def test_a_failed_checkpoint_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    from user_embed.commands.lightning import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def crash_midway(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left either
