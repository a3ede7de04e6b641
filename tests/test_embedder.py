"""UserEmbedder.save_pretrained / from_pretrained: exact round trip, safe file set, clear mismatch errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from data_pipelines.outputs import MARKER_NAME
from user_embed.config import AdapterConfig, SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.embedder import UserEmbedder
from user_embed.encoders import SourceInputs
from user_embed.errors import CheckpointError
from user_embed.llm.record import LLMRecord

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXT_MODEL = "tiny-text"
LLM_INFO = LLMRecord(name_or_path="tiny-llm", origin="tests/tiny-llm", revision="abc123", hidden_size=64,
                     embed_rms=0.02)


def make_spec(num_items: int = 10) -> DataSpec:
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(num_items + 2, 8, generator=generator)
    vectors[:2] = 0
    return DataSpec(item_ids=[f"i{i}" for i in range(num_items)], categories=["a", "b", "c"], max_categories=2,
                    profile_cat_fields={"gender": ["F", "M"]}, profile_num_fields={"age": [30.0, 10.0]},
                    text_dims={TEXT_MODEL: 8}, item_vectors={TEXT_MODEL: vectors},
                    item_texts=[f"movie {i}" for i in range(num_items)])


def make_embedder(spec: DataSpec | None = None, adapter_kind: str = "resampler", named: int = 0,
                  pointer: bool = False) -> UserEmbedder:
    torch.manual_seed(0)
    sources = [SourceConfig(kind="sequence", name="ratings", dim=16, heads=2, layers=1, max_len=6),
               SourceConfig(kind="text", name="titles", dim=16, heads=2, num_tokens=2, max_len=4,
                            text_encoder=TEXT_MODEL),
               SourceConfig(kind="tabular", name="profile", dim=8, heads=2)]
    adapter = AdapterConfig(kind=adapter_kind, num_tokens=3, dim=32, layers=1, heads=2, user_dim=12,
                            named_categories=named, category_pointer=pointer)
    embedder = UserEmbedder(sources, adapter, spec or make_spec(), LLM_INFO)
    with torch.no_grad():  # move away from the initialisation so a round trip that re-initialises shows
        for parameter in embedder.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
        embedder.set_category_names(torch.randn(3, 64) * 0.02)
    return embedder.eval()


def make_inputs(batch: int = 4, length: int = 8) -> SourceInputs:
    generator = torch.Generator().manual_seed(1)
    items = torch.randint(2, 12, (batch, length), generator=generator)
    items[0, :5] = 0  # a short history
    items[1] = 0  # no history at all
    return SourceInputs(items=items, categories=torch.randint(0, 4, (batch, length, 2), generator=generator),
                        values=torch.randn(batch, length, generator=generator), has_value=items > 0,
                        gaps=torch.randint(0, 10, (batch, length), generator=generator), mask=items > 0,
                        profile_cat=torch.tensor([[1], [2], [0], [1]]), profile_num=torch.randn(batch, 1),
                        profile_num_mask=torch.tensor([[True], [True], [False], [True]]))


@pytest.fixture()
def saved(tmp_path) -> tuple[UserEmbedder, Path]:
    embedder = make_embedder()
    embedder.metrics = {"accuracy": {"soft": {"overall": 0.75}}}
    return embedder, embedder.save_pretrained(tmp_path / "embedder")


@pytest.mark.parametrize("adapter_kind,named,pointer", [("mlp", 0, False), ("resampler", 0, False),
                                                        ("resampler", 2, True)])
def test_round_trip_is_exact(tmp_path, adapter_kind, named, pointer):
    embedder = make_embedder(adapter_kind=adapter_kind, named=named, pointer=pointer)
    path = embedder.save_pretrained(tmp_path / "embedder")
    loaded = UserEmbedder.from_pretrained(path).eval()
    before, after = embedder.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    inputs, question = make_inputs(), torch.randn(4, 64) * 0.02
    with torch.no_grad():
        a, b = embedder(inputs, question), loaded(inputs, question)
    assert torch.equal(a.soft_prompt, b.soft_prompt) and torch.equal(a.user_vector, b.user_vector)
    assert torch.isfinite(a.soft_prompt).all()
    assert a.soft_prompt.shape[1] == embedder.num_tokens == loaded.num_tokens == 3 + named
    # the frozen item-text vectors travel inside the weights: no text model is needed to reload
    assert "titles" in loaded.encoders and torch.equal(loaded.encoders["titles"].item_vectors,
                                                       embedder.spec.item_vectors[TEXT_MODEL])
    assert loaded.spec.item_ids == embedder.spec.item_ids and loaded.llm_record == LLM_INFO
    assert [s.name for s in loaded.source_configs] == ["ratings", "titles", "profile"]


def test_saved_files_are_json_safetensors_and_a_card_without_pickle(saved, monkeypatch):
    embedder, path = saved
    assert sorted(p.name for p in path.iterdir()) == [MARKER_NAME, "README.md", "config.json", "model.safetensors"]
    assert json.loads((path / MARKER_NAME).read_text())["kind"] == "embedder"  # what the folder is, who wrote it
    assert not list(path.parent.glob(".embedder*"))  # no temporary folders left behind
    config = json.loads((path / "config.json").read_text())
    assert config["llm"]["hidden_size"] == 64 and config["adapter"]["num_tokens"] == 3
    assert [s["kind"] for s in config["sources"]] == ["sequence", "text", "tabular"]
    assert "item_vectors" not in config["spec"]  # tensors live in safetensors only
    weights = load_file(str(path / "model.safetensors"))
    assert set(weights) == set(embedder.state_dict())
    card = (path / "README.md").read_text()
    for expected in ("tests/tiny-llm", "abc123", "K = 3", "`ratings` (sequence", "`profile` (tabular", "0.75"):
        assert expected in card
    # loading never unpickles anything
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    UserEmbedder.from_pretrained(path)
    # saving again over an existing folder replaces it atomically
    embedder.metrics = {}
    embedder.save_pretrained(path)
    assert "No metrics recorded" in (path / "README.md").read_text()
    assert sorted(p.name for p in path.parent.iterdir()) == ["embedder"]


def test_missing_or_pickled_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not a user embedder"):
        UserEmbedder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    torch.save({"x": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        UserEmbedder.from_pretrained(tmp_path)


def _edit_config(path: Path, edit) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("case", ["num_tokens", "source_dim", "fewer_items", "dropped_source", "added_source"])
def test_config_weights_mismatch_is_a_checkpoint_error(saved, case):
    _, path = saved
    edits = {
        "num_tokens": lambda c: c["adapter"].update(num_tokens=5),
        "source_dim": lambda c: c["sources"][0].update(dim=32),
        "fewer_items": lambda c: c["spec"].update(item_ids=c["spec"]["item_ids"][:5]),
        "dropped_source": lambda c: c["sources"].pop(2),
        "added_source": lambda c: c["sources"].append({**c["sources"][2], "name": "profile2"}),
    }
    _edit_config(path, edits[case])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        UserEmbedder.from_pretrained(path)


def test_weights_missing_a_tensor_or_broken_config(saved):
    _, path = saved
    weights = load_file(str(path / "model.safetensors"))
    weights.pop(next(k for k in weights if k.startswith("adapter.")))
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing"):
        UserEmbedder.from_pretrained(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid embedder config"):
        UserEmbedder.from_pretrained(path)
    (path / "config.json").write_text(json.dumps({"sources": []}))
    with pytest.raises(CheckpointError, match="invalid embedder config"):
        UserEmbedder.from_pretrained(path)


def test_llm_hidden_size_mismatch_is_a_checkpoint_error(saved, tiny_llm_dir):
    embedder, path = saved
    # pairing with a real LLM of another width, the way the module adopts a trained embedder
    from user_embed.config import LLMConfig
    from user_embed.training.module import UserEmbedModule

    narrow = dataclasses.replace(LLM_INFO, hidden_size=32)
    other = UserEmbedder(embedder.source_configs, embedder.adapter_config, embedder.spec, narrow)
    module = UserEmbedModule(sources=embedder.source_configs, adapter=embedder.adapter_config,
                             llm=LLMConfig(name_or_path=str(tiny_llm_dir)))
    with pytest.raises(CheckpointError, match=f"'{tiny_llm_dir}' has hidden size 64"):
        module.build(other.spec, embedder=other)
