"""The public Python path: the README's quickstart runs as written, without Lightning, on the tiny in-process
model and (slow) on the real offline models; PersonalizedLM and UserStore behave as documented."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from conftest import write_tiny_dataset
from test_generate import build_tiny_embedder, build_varied_llm

ROOT = Path(__file__).parent.parent
README_IDS = ["196", "405"]  # the user ids the README's quickstart asks about
LIGHTNING_PACKAGES = ("lightning", "pytorch_lightning", "lightning_fabric", "lightning_utilities")


def readme_quickstart() -> str:
    """The first ```python block of the README."""
    match = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert match, "README.md has no ```python block"
    return match.group(1)


def run_quickstart(workdir: Path, embedder: Path, data: Path, timeout: int = 600) -> str:
    """Run the README's quickstart in a fresh interpreter, in a folder where its relative paths lead to
    ``embedder`` and ``data``; afterwards the script prints the Lightning modules it imported."""
    (workdir / "runs" / "quickstart").mkdir(parents=True)
    (workdir / "data").mkdir()
    (workdir / "runs" / "quickstart" / "embedder").symlink_to(embedder.resolve(), target_is_directory=True)
    (workdir / "data" / "ml-100k").symlink_to(data.resolve(), target_is_directory=True)
    script = readme_quickstart() + (
        "\nimport sys\n"
        f"print('LIGHTNING', sorted(m for m in sys.modules if m.split('.')[0] in {LIGHTNING_PACKAGES!r}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    llm = build_varied_llm(root / "llm")
    ids = README_IDS + [f"u{i}" for i in range(2, 24)]
    data = write_tiny_dataset(root / "data", user_ids=ids)
    return {"root": root, "llm": llm, "data": data, "embedder": build_tiny_embedder(llm, data, root / "embedder")}


@pytest.fixture(scope="module")
def lm(setup):
    from user_embed.model import PersonalizedLM

    return PersonalizedLM.from_pretrained(setup["embedder"], device="cpu")


@pytest.fixture(scope="module")
def users(setup):
    from user_embed.store import UserStore

    return UserStore.from_folder(setup["data"])


def test_readme_quickstart_runs_without_lightning(setup, tmp_path):
    out = run_quickstart(tmp_path, setup["embedder"], setup["data"])
    first = out.splitlines()[0]
    assert first.startswith("torch.Size([2, 32])"), out  # (2, user_dim) of the tiny embedder
    assert "LIGHTNING []" in out  # loading, embedding and generating never import Lightning


@pytest.mark.slow
def test_readme_quickstart_on_the_real_offline_models(tmp_path):
    """The same code on SmolLM2-135M-Instruct and MovieLens-100k (an untrained embedder for that pair)."""
    from data_pipelines.prepare import prepare_movielens_100k
    from user_embed.assets import movielens_100k_dir
    from user_embed.config import AdapterConfig, LLMConfig, SourceConfig
    from user_embed.data.spec import DataSpec
    from user_embed.model import PersonalizedLM
    from user_embed.store import UserStore

    data = prepare_movielens_100k(tmp_path / "ml-100k", source=movielens_100k_dir(), build_qa=False,
                                  report_to=lambda *a, **k: None)
    store = UserStore.from_folder(data)
    spec = DataSpec.from_tables(store.events, store.items, store.users)
    torch.manual_seed(0)
    lm = PersonalizedLM.build([SourceConfig(kind="sequence", name="ratings"), SourceConfig(kind="tabular", dim=64)],
                              AdapterConfig(num_tokens=4), spec, LLMConfig())
    embedder = lm.embedder.save_pretrained(tmp_path / "embedder")
    out = run_quickstart(tmp_path / "work", embedder, data)
    assert out.splitlines()[0].startswith("torch.Size([2, 256])") and len(out.splitlines()[0]) > 25, out
    assert "LIGHTNING []" in out


def test_public_api_is_small_and_lazy():
    done = subprocess.run([sys.executable, "-c", "import sys, user_embed as ue; print(len(ue.__all__)); "
                           "print(sorted(m.split('.')[0] for m in sys.modules if m.split('.')[0] in "
                           "('torch', 'transformers', 'lightning', 'polars')))"],
                          capture_output=True, text=True, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    count, heavy = done.stdout.splitlines()
    assert 8 <= int(count) <= 15 and heavy == "[]", done.stdout + done.stderr


def test_embed_soft_prompt_and_question_conditioning(lm, users):
    vectors = lm.embed(users, ["196", "405", "u2"])
    assert vectors.shape == (3, 32) and not torch.equal(vectors[0], vectors[1])
    torch.testing.assert_close(lm.embed(users, [196]), vectors[:1])  # integer ids read as their strings
    soft = lm.soft_prompt(users, ["196", "405"], ["which genre ?", "which genre ?"])
    assert soft.shape == (2, lm.num_tokens, 64)
    other = lm.soft_prompt(users, ["196"], ["how many movies did this user watch ?"])
    assert not torch.allclose(soft[0], other[0])  # the adapter is instruction-aware
    conditioned = lm.embed(users, ["196"], ["which genre ?"])
    torch.testing.assert_close(conditioned[0], soft[0].mean(0))
    early = lm.embed(users, ["196"], cutoffs=[1_000_000 + 3600 * 3])  # only the first 3 events
    assert not torch.equal(early[0], vectors[0])


def test_score_options_agrees_with_generation_methods(lm, users):
    options = [["drama", "comedy"], ["action", "horror"]]
    scores = lm.score_options(users, ["196", "405"], ["which genre ?", "which genre ?"], options)
    assert [len(s) for s in scores] == [2, 2] and all(s < 0 for row in scores for s in row)
    batch = lm.batch(users, lm.examples(users, ["196", "405"], ["which genre ?"] * 2, options=options))
    assert sum(lm.option_scores(batch)[0], []) == pytest.approx(sum(scores, []))
    for method in ("none", "text", "bm25"):
        baseline = lm.score_options(users, ["196", "405"], ["which genre ?"] * 2, options, method=method)
        assert [len(s) for s in baseline] == [2, 2]
    none = lm.score_options(users, ["196", "405"], ["which genre ?"] * 2, options, method="none")
    assert none[0] != pytest.approx(scores[0], abs=1e-6)  # the soft prompt changes the likelihoods
    answers = {m: lm.generate(users, ["196"], ["which genre ?"], method=m) for m in ("soft", "none", "text")}
    assert all(isinstance(a[0], str) for a in answers.values())


def test_from_frames_polars_and_pandas_match_the_folder(lm, users, setup):
    from user_embed.store import UserStore

    events = pl.read_parquet(setup["data"] / "events.parquet")
    items = pl.read_parquet(setup["data"] / "items.parquet").select("item_id", "title", "categories")
    profiles = pl.read_parquet(setup["data"] / "users.parquet")
    expected = lm.embed(users, README_IDS)
    minimal = UserStore.from_frames(events.select("user_id", "item_id", "timestamp", "value"), items, profiles)
    torch.testing.assert_close(lm.embed(minimal, README_IDS), expected)
    from_pandas = UserStore.from_frames(events.to_pandas(), items.to_pandas(), profiles.to_pandas())
    torch.testing.assert_close(lm.embed(from_pandas, README_IDS), expected)
    # integer ids and Int32 timestamps are lossless casts
    numeric = events.filter(pl.col("user_id").is_in(README_IDS)).with_columns(
        pl.col("user_id").cast(pl.Int64), pl.col("timestamp").cast(pl.Int32))
    store = UserStore.from_frames(numeric, items, profiles.filter(pl.col("user_id").is_in(README_IDS)))
    torch.testing.assert_close(lm.embed(store, README_IDS), expected)
    cut = UserStore.from_frames(events, items, profiles, cutoff=1_000_000 + 3600 * 3)
    torch.testing.assert_close(lm.embed(cut, README_IDS), lm.embed(users, README_IDS, cutoffs=[1_000_000 + 3600 * 3] * 2))


def test_bad_input_is_one_clear_line(lm, users, setup, tmp_path):
    from user_embed.errors import CheckpointError, UserError
    from user_embed.model import PersonalizedLM
    from user_embed.store import UserStore

    events = pl.read_parquet(setup["data"] / "events.parquet")
    items = pl.read_parquet(setup["data"] / "items.parquet")
    cases = [
        (lambda: UserStore.from_frames(events.drop("timestamp"), items), "events frame: table 'events', column 'timestamp': missing"),
        (lambda: UserStore.from_frames(events.with_columns(pl.col("timestamp").cast(pl.Utf8)), items),
         "column 'timestamp': has type String"),
        (lambda: UserStore.from_frames(events, items.drop("item_id")), "items frame: table 'items', column 'item_id'"),
        (lambda: UserStore.from_frames({"user_id": ["a"]}, items), "events frame: expected a polars or pandas DataFrame"),
        (lambda: UserStore.from_folder(tmp_path / "nowhere"), "no such data folder"),
        (lambda: lm.embed(users, ["ghost"]), "unknown user 'ghost'"),
        (lambda: lm.embed(users, "196"), "user_ids must be a list"),
        (lambda: lm.generate(users, ["196"], ["  "]), "row 0 (user '196'): empty question"),
        (lambda: lm.soft_prompt(users, ["196"], [""]), "question 0 (user '196') is empty"),
        (lambda: lm.generate(users, ["196"], [{"text": "hi"}]), "is a dict, not text"),
        (lambda: lm.soft_prompt(users, ["196", "405"], ["q"]), "questions: 1 given for 2 user ids"),
        (lambda: lm.score_options(users, ["196"], ["which genre ?"], [[]]), "options 0 (user '196') must be"),
        (lambda: lm.generate(users, ["196"], ["which genre ?"], method="rag"), "unknown method 'rag'"),
    ]
    for call, message in cases:
        with pytest.raises(UserError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value), (message, str(error.value))

    # a folder without config.json, a truncated safetensors file, an LLM of another width
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes((setup["embedder"] / "model.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        PersonalizedLM.from_pretrained(broken)
    (broken / "config.json").write_text((setup["embedder"] / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        PersonalizedLM.from_pretrained(broken)
    config = json.loads((setup["embedder"] / "config.json").read_text())
    config["llm"]["hidden_size"] = "wide"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="hidden_size must be"):
        PersonalizedLM.from_pretrained(broken)


def test_the_training_recipe_is_a_small_file_over_the_inference_model():
    recipe = ROOT / "user_embed" / "training" / "module.py"
    assert len(recipe.read_text().splitlines()) <= 200
    for path in (ROOT / "user_embed").rglob("*.py"):  # nothing below the recipe imports Lightning
        if path.parts[-2] not in ("training", "commands", "pretrain"):
            assert "import lightning" not in path.read_text() and "from lightning" not in path.read_text(), path


def test_userqa_evaluation_runs_a_method_on_a_user_subset(lm, users, setup):
    from data_pipelines.schema import read_table
    from user_embed.data.questions import questions_by_split
    from user_embed.eval.userqa import evaluate_userqa

    examples = questions_by_split(read_table(setup["data"], "qa"))["train"][:12]
    few = {examples[0].user_id, examples[1].user_id}
    metrics = evaluate_userqa(lm, users, examples, ["none", "text", "soft"], progress=False,
                              method_users={"text": few})
    assert metrics["answered"] == {"none": 12, "text": 2, "soft": 12}
    assert sum(row["text"] is not None for row in metrics["predictions"]) == 2
    assert metrics["paired"]["soft-none"]["overall"]["questions"] == 12
    assert metrics["paired"]["soft-text"]["overall"]["questions"] == 2
