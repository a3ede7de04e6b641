"""A 2-process DDP fit on CPU (gloo, ``ddp_spawn``): training runs, ranks stay in sync, and the
contrastive loss of each rank compares against the other rank's users too (negatives gathered).

What each process saw is written by a callback to files in tmp_path and checked here.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from data_pipelines.outputs import MARKER_NAME
from user_embed.config import AdapterConfig, LLMConfig, LossConfig, SourceConfig
from user_embed.training.datamodule import UserDataModule
from user_embed.training.module import UserEmbedModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOCAL_BATCH = 4


class RecordWhatEachRankSees(L.Callback):
    """Appends, per training step, the rank, world size, local batch and the contrastive loss's batch."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = {"rank": trainer.global_rank, "world": trainer.world_size, "step": trainer.global_step,
                  "local_batch": len(batch), "contrastive_batch": pl_module.contrastive.last_batch_size,
                  "users": [ex.user_id for ex in batch.examples],
                  "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None}
        with open(Path(self.out_dir) / f"rank{trainer.global_rank}.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_train_end(self, trainer, pl_module) -> None:
        checksum = [float(p.detach().double().sum()) for p in pl_module.embedder.parameters()]
        checksum += [float(p.detach().double().sum()) for p in pl_module.contrastive.parameters()]
        (Path(self.out_dir) / f"params{trainer.global_rank}.json").write_text(json.dumps(checksum))


@pytest.mark.timeout(300)  # a stuck process group must fail the test, not hang the suite
def test_two_process_ddp_fit_gathers_negatives(tiny_llm_dir, tiny_text_encoder_dir, tiny_data_dir, tmp_path,
                                               user_embed_home):
    records = tmp_path / "records"
    records.mkdir()
    data = UserDataModule(str(tiny_data_dir), batch_size=LOCAL_BATCH, eval_batch_size=4, max_history=12,
                          text_encoder=str(tiny_text_encoder_dir))
    module = UserEmbedModule(
        sources=[SourceConfig(kind="sequence", name="ratings", dim=16, heads=2, layers=1, max_len=12),
                 SourceConfig(kind="text", name="titles", dim=16, heads=2, num_tokens=2, max_len=12,
                              text_encoder=str(tiny_text_encoder_dir)),
                 SourceConfig(kind="tabular", name="profile", dim=8, heads=2)],
        adapter=AdapterConfig(kind="resampler", num_tokens=2, dim=16, layers=1, heads=2, user_dim=8),
        llm=LLMConfig(name_or_path=str(tiny_llm_dir)), loss=LossConfig(contrastive_weight=0.5, contrastive_dim=8),
        export_dir=str(tmp_path / "embedder"))
    trainer = L.Trainer(strategy="ddp_spawn", accelerator="cpu", devices=2, max_steps=2, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[RecordWhatEachRankSees(str(records))],
                        default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=data)

    seen = {rank: [json.loads(line) for line in (records / f"rank{rank}.jsonl").read_text().splitlines()]
            for rank in (0, 1)}
    for rank, steps in seen.items():
        assert len(steps) == 2, steps
        for record in steps:
            assert record["world"] == 2 and record["backend"] == "gloo"
            assert record["local_batch"] == LOCAL_BATCH
            # the loss compared this rank's users with the other rank's: twice the local batch
            assert record["contrastive_batch"] == 2 * LOCAL_BATCH
    # the two ranks trained on different users (DistributedSampler), so the gathered negatives are new ones
    assert set(seen[0][0]["users"]).isdisjoint(seen[1][0]["users"])
    # DDP averaged the gradients: both ranks end with the same weights
    params = [json.loads((records / f"params{rank}.json").read_text()) for rank in (0, 1)]
    assert params[0] == pytest.approx(params[1], rel=1e-6, abs=1e-7)
    # rank 0 exported the embedder
    assert sorted(p.name for p in (tmp_path / "embedder").iterdir()) == [MARKER_NAME, "README.md", "config.json",
                                                                          "model.safetensors"]
