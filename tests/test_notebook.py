"""The quickstart notebook executes top to bottom on a tiny embedder (tiny LLM, tiny data)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from user_embed.config import AdapterConfig, LLMConfig, SourceConfig
from user_embed.training.datamodule import UserDataModule
from user_embed.training.module import UserEmbedModule

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"


@pytest.fixture()
def tiny_embedder(tmp_path, tiny_llm_dir, tiny_data_dir) -> Path:
    data = UserDataModule(str(tiny_data_dir), item_text_vectors=False, contrastive_texts=False)
    data.setup()
    module = UserEmbedModule([SourceConfig(kind="sequence", dim=32, heads=2), SourceConfig(kind="tabular", dim=32, heads=2)],
                             AdapterConfig(num_tokens=2, dim=32, heads=2), LLMConfig(name_or_path=str(tiny_llm_dir)))
    module.build(data.spec)
    return module.embedder.save_pretrained(tmp_path / "embedder")


def test_quickstart_notebook_runs(tiny_embedder, tiny_data_dir, monkeypatch):
    monkeypatch.setenv("UE_CHECKPOINT", str(tiny_embedder))
    monkeypatch.setenv("UE_DATA", str(tiny_data_dir))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert outputs.count("answer for user") == 2  # the generation cell printed answers for both users
    assert os.environ["UE_CHECKPOINT"] == str(tiny_embedder)
