"""Numerics guarded (issue 15): config domains, a fit whose loss turns NaN mid-run, broken weights never saved.

The one-line refusals of bad config values are cases of tests/test_bad_input.py (``numerics/…``); here:
the domain helper itself, the FiniteGuard callback on a loss that becomes NaN after some good steps
(the fit stops, exit status 2, nothing exported) and on a gradient that becomes NaN while the loss stays
finite (the weights never take the value), and save_pretrained / the encoder checkpoint refusing NaN.
"""

from __future__ import annotations

import json
import math

import lightning as L  # imported before any capsys test: its log handler keeps that stderr
import pytest
import torch
import yaml

from test_fit_cli import write_config
from user_embed.cli import main
from user_embed.domains import check_number
from user_embed.errors import CheckpointError, ConfigError
from user_embed.training.finite_guard import FiniteGuard, TrainingDiverged
from user_embed.training.trainer_settings import check_trainer_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread", "user_embed_home")


@pytest.mark.parametrize(("value", "domain", "message"), [
    (math.nan, {"low": 0, "low_open": True}, "must be a finite number > 0, got nan"),
    (-1e-3, {"low": 0, "low_open": True}, "got -0.001"),
    (True, {"low": 0}, "must be a finite number >= 0, got True"),  # YAML `yes` is not a number
    ("1e-3", {"low": 0}, "got '1e-3'"),
    (2.5, {"low": 0, "integer": True}, "must be an integer >= 0, got 2.5"),
    (1.0, {"low": 0, "high": 1, "high_open": True}, "in [0, 1), got 1.0"),
    (-2, {"low": 0, "integer": True, "allow": (-1,)}, "an integer >= 0 or -1, got -2"),
])
def test_check_number_names_key_domain_and_value(value, domain, message):
    with pytest.raises(ConfigError) as refused:
        check_number("x.y", value, **domain)
    assert str(refused.value).startswith("x.y must be ") and str(refused.value).endswith(message), refused.value


def test_check_number_accepts_values_inside_the_domain():
    check_number("a", 0.5, low=0, high=1)
    check_number("a", -1, low=0, integer=True, allow=(-1,))
    check_number("a", None, low=0, allow=(None,))
    check_number("a", torch.tensor(3).item(), low=1, integer=True)


def test_trainer_settings_in_lightnings_meaning():
    check_trainer_settings({"max_steps": -1, "max_epochs": None, "limit_val_batches": 0, "limit_train_batches": 0.5,
                            "val_check_interval": 1.0, "gradient_clip_val": None, "num_sanity_val_steps": -1})
    for bad, key in (({"max_steps": -2}, "max_steps"), ({"limit_val_batches": -0.1}, "limit_val_batches"),
                     ({"val_check_interval": 0.0}, "val_check_interval"), ({"log_every_n_steps": 0}, "log_every_n"),
                     ({"gradient_clip_algorithm": "clip"}, "gradient_clip_algorithm")):
        with pytest.raises(ConfigError, match=f"trainer.{key}"):
            check_trainer_settings(bad)


# --------------------------------------------------------------------------- the fit stops, nothing is exported


def test_a_loss_that_turns_nan_mid_run_stops_the_fit_and_exports_nothing(tmp_path, tiny_llm_dir,
                                                                         tiny_text_encoder_dir, tiny_data_dir,
                                                                         monkeypatch, capsys):
    from user_embed.training.module import UserEmbedModule

    config = write_config(tmp_path, tiny_llm_dir, tiny_text_encoder_dir, tiny_data_dir)
    losses = UserEmbedModule.losses

    def nan_from_step_2(self, batch, *args, **kwargs):
        out = losses(self, batch, *args, **kwargs)
        if self.training and self.global_step >= 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(UserEmbedModule, "losses", nan_from_step_2)
    capsys.readouterr()
    code = main(["fit", "--config", str(config), "--trainer.max_steps", "5"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "training stopped at step 2: the training loss is nan" in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / "embedder").exists()  # on_fit_end never ran: nothing exported
    checkpoints = sorted(p.name for p in (tmp_path / "runs" / "checkpoints").glob("*step=*.ckpt"))
    assert checkpoints == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt"]  # the good steps stay resumable
    state = torch.load(tmp_path / "runs" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


class Tiny(L.LightningModule):
    """One linear layer; from step ``bad_step`` its gradients are NaN while the loss stays finite."""

    def __init__(self, bad_step: int):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.bad_step = bad_step
        self.layer.weight.register_hook(lambda g: g * float("nan") if self.global_step >= self.bad_step else g)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tiny_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=[FiniteGuard()], **kwargs)


def test_a_nan_gradient_stops_before_the_weights_take_it():
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 3)), batch_size=4)
    model = Tiny(bad_step=3)
    with pytest.raises(TrainingDiverged, match=r"step 3: the gradient of layer\.weight is nan"):
        tiny_trainer().fit(model, data)
    assert torch.isfinite(model.layer.weight).all() and torch.isfinite(model.layer.bias).all()


def test_finite_training_is_untouched():
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 3)), batch_size=4)
    trainer = tiny_trainer()
    trainer.fit(Tiny(bad_step=10**9), data)
    assert trainer.global_step == 5


# --------------------------------------------------------------------------- broken weights never saved


def test_save_pretrained_refuses_non_finite_weights(tmp_path, tiny_llm_dir, tiny_data_dir):
    from test_bad_input import build_embedder
    from user_embed.embedder import UserEmbedder

    path = build_embedder(tiny_llm_dir, tiny_data_dir, tmp_path / "good")
    embedder = UserEmbedder.from_pretrained(path)
    with torch.no_grad():
        next(embedder.parameters())[0] = float("inf")
    with pytest.raises(CheckpointError, match=r"not saved — the embedder's weights are broken \(tensor '.*' holds 1 "):
        embedder.save_pretrained(tmp_path / "broken")
    assert not (tmp_path / "broken").exists() and not list(tmp_path.glob(".broken*"))
    with pytest.raises(CheckpointError, match="broken"):
        embedder.save_pretrained(path)  # the good folder stays as it was
    assert UserEmbedder.from_pretrained(path) is not None


def test_encoder_checkpoint_refuses_non_finite_weights(tmp_path):
    from user_embed.config import SourceConfig
    from user_embed.data.spec import DataSpec
    from user_embed.encoders import build_encoder
    from user_embed.pretrain.checkpoint import save_encoder_checkpoint

    source = SourceConfig(kind="sasrec", name="sequence", dim=8, heads=2, layers=1, max_len=4)
    spec = DataSpec(item_ids=["a", "b"], categories=["c"])
    encoder = build_encoder(source, spec)
    save_encoder_checkpoint(tmp_path / "ok", encoder, source, spec, report={"test": {}})
    assert json.loads((tmp_path / "ok" / "metrics.json").read_text()) == {"test": {}}
    with torch.no_grad():
        next(encoder.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="weights are broken"):
        save_encoder_checkpoint(tmp_path / "bad", encoder, source, spec)
    assert not (tmp_path / "bad").exists()


def test_a_config_with_nan_learning_rate_is_refused_before_training(tmp_path, tiny_llm_dir, tiny_text_encoder_dir,
                                                                    tiny_data_dir, capsys):
    config = write_config(tmp_path, tiny_llm_dir, tiny_text_encoder_dir, tiny_data_dir)
    values = yaml.safe_load(config.read_text())
    values["model"]["optim"]["lr"] = float("nan")
    config.write_text(yaml.safe_dump(values))
    capsys.readouterr()
    assert main(["fit", "--config", str(config)]) == 2
    assert "optim.lr must be a finite number > 0, got nan" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before the trainer made any folder


# --------------------------------------------------------------------------- non-finite predictions


def test_lamp3_nan_or_inf_prediction_counts_as_unparseable(tmp_path, capsys):
    golds = tmp_path / "golds.json"
    golds.write_text(json.dumps({"task": "LaMP_3", "golds": [{"id": "1", "output": "4"}, {"id": "2", "output": "2"}]}))
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"task": "LaMP_3", "golds": [{"id": "1", "output": "nan"}, {"id": "2", "output": "inf"}]}))
    capsys.readouterr()
    code = main(["score", "lamp", "--task", "LaMP_3", "--golds", str(golds), "--preds", str(preds)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["mae"] == pytest.approx((3 + 3) / 2)  # gold 4 → farther extreme 1; gold 2 → 5
