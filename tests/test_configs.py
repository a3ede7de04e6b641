"""Every shipped config names real encoder kinds and valid settings, and each ablation config is the
quickstart with exactly its one documented change (configs/ablations/regenerate.py keeps them in sync)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import yaml

from user_embed.config import AdapterConfig, LossConfig, OptimConfig, SourceConfig
from user_embed.encoders import list_encoders

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def load_regenerate():
    spec = importlib.util.spec_from_file_location("regenerate", CONFIGS / "ablations" / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_is_valid(path):
    config = yaml.safe_load(path.read_text())
    model = config["model"]
    if "encoder" in model:  # a pre-training config (`user-embed pretrain`): one sequence encoder
        assert SourceConfig(**model["encoder"]).kind in list_encoders()
        return
    for source in model["sources"]:
        assert SourceConfig(**source).kind in list_encoders()
    AdapterConfig(**model.get("adapter", {}))
    LossConfig(**model.get("loss", {}))
    OptimConfig(**model.get("optim", {}))


@pytest.mark.parametrize("name", list(load_regenerate().CHANGES))
def test_ablation_is_the_quickstart_with_one_change(name):
    regenerate = load_regenerate()
    expected = regenerate._retarget(yaml.safe_load((CONFIGS / "quickstart.yaml").read_text()), "runs/quickstart",
                                    f"runs/ablation_{name}")
    regenerate.CHANGES[name][1](expected)
    shipped = yaml.safe_load((CONFIGS / "ablations" / f"{name}.yaml").read_text())
    assert shipped == expected, "run python configs/ablations/regenerate.py"
    assert copy.deepcopy(shipped) != regenerate._retarget(
        yaml.safe_load((CONFIGS / "quickstart.yaml").read_text()), "runs/quickstart", f"runs/ablation_{name}")
