"""Multiple-choice scoring: a shared prefix run once gives the same scores as the full prompts,
and the evaluation subsets/batches that make the prefix shareable are what they claim."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from user_embed.errors import ConfigError
from user_embed.eval.userqa import context_batches
from user_embed.llm.prompt import PromptIds
from user_embed.llm.scoring import prefill_shared_prefix, score_options, shared_prefix_length
from user_embed.llm.soft_prompt import collate_prompts
from user_embed.training.datamodule import UserDataModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # one token always left to run
    assert shared_prefix_length([[7, 1], [8, 1]]) == 0


def test_prefix_cache_scores_equal_full_prompt_scores(tiny_llm_dir):
    from transformers import LlamaForCausalLM

    llm = LlamaForCausalLM.from_pretrained(tiny_llm_dir).eval()
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(5, 60, (40,), generator=g).tolist()
    suffixes = [torch.randint(5, 60, (n,), generator=g).tolist() for n in (3, 7, 5)]
    options = [[[11], [12, 13]], [[14, 15, 16], [17]], [[18], [19], [20, 21]]]
    embed = llm.get_input_embeddings()

    full = collate_prompts([PromptIds(ids=prefix + s) for s in suffixes], 0, "left")
    expected = score_options(llm, embed(full.input_ids), full.attention_mask, full.position_ids, options, 0)

    past = prefill_shared_prefix(llm, prefix, len(suffixes), "cpu")
    rest = collate_prompts([PromptIds(ids=s) for s in suffixes], 0, "left")  # padding sits between prefix and suffix
    got = score_options(llm, embed(rest.input_ids), rest.attention_mask, rest.position_ids + len(prefix), options, 0,
                        past=past)
    for row_expected, row_got in zip(expected, got):
        assert row_got == pytest.approx(row_expected, abs=1e-4)


def test_context_batches_group_and_cap():
    contexts = ["a", "b", "a", "a", "b", "c"]
    assert context_batches(contexts, 2) == [[0, 2], [3], [1, 4], [5]]


def test_max_eval_users_keeps_whole_users(tiny_data_dir):
    qa = pl.read_parquet(tiny_data_dir / "qa.parquet")
    extra = qa.with_columns(task=pl.lit("second_task"))  # every user gets two questions
    pl.concat([qa, extra]).write_parquet(tiny_data_dir / "qa.parquet")
    data = UserDataModule(str(tiny_data_dir), item_text_vectors=False, contrastive_texts=False, max_eval_users=2)
    data.setup("test")
    for split in ("val", "test"):
        users = [ex.user_id for ex in data.examples[split]]
        assert len(set(users)) == 2 and len(users) == 4
    assert len(data.examples["train"]) == 2 * qa.filter(pl.col("split") == "train").height  # train untouched
    with pytest.raises(ConfigError, match="max_eval_users"):
        UserDataModule(str(tiny_data_dir), max_eval_users=0)


def test_history_writer_recent_and_bm25():
    from user_embed.data.collate import Example
    from user_embed.data.history import UserHistories
    from user_embed.data.spec import DataSpec
    from user_embed.eval.history_text import HistoryWriter

    titles = ["Alien (1979)", "Heat (1995)", "Aliens (1986)", "Casino (1995)", "Babe (1995)", "Fargo (1996)",
              "Clueless (1995)"]
    genres = [["Sci-Fi"], ["Crime"], ["Sci-Fi"], ["Crime"], ["Comedy"], ["Crime"], ["Comedy"]]
    n = len(titles)
    items = pl.DataFrame({"item_id": [f"i{i}" for i in range(n)], "title": titles, "categories": genres})
    events = pl.DataFrame({"user_id": ["u"] * n, "timestamp": list(range(1, n + 1)), "source": ["rating"] * n,
                           "item_id": [f"i{i}" for i in range(n)], "value": [5.0, 3.0, 4.0, 2.0, 1.0, 2.0, 3.0],
                           "text": [None] * n}, schema_overrides={"text": pl.Utf8})
    users = pl.DataFrame({"user_id": ["u"]})
    spec = DataSpec.from_tables(events, items, users)
    histories = UserHistories(events, spec)
    question = Example("u", "Will this user like Alien Resurrection (Sci-Fi)?", "", [], cutoff=7)  # 6 events before
    recent = HistoryWriter(histories, spec, items, num_events=2)(question)
    assert recent.splitlines()[1:] == ["- Babe (1995) (Comedy), rated 1", "- Fargo (1996) (Crime), rated 2"]
    matched = HistoryWriter(histories, spec, items, num_events=2, retrieval="bm25")(question)
    assert matched.splitlines()[1:] == ["- Alien (1979) (Sci-Fi), rated 5", "- Aliens (1986) (Sci-Fi), rated 4"]
    assert HistoryWriter(histories, spec, items)(Example("u", "q", "", [], cutoff=1)) == "This user has no history yet."
    with pytest.raises(ValueError, match="retrieval"):
        HistoryWriter(histories, spec, items, retrieval="dense")
