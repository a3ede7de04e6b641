"""Personalized generation with the HF backend: batching, masks/positions, KV cache, bad input, CLI.

A tiny random Llama (conftest) and a tiny embedder (random weights, saved with
``save_pretrained``) stand in for a trained checkpoint; references are computed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from conftest import build_tiny_llm, write_tiny_dataset


def build_varied_llm(folder: Path, seed: int = 0, std: float = 0.3, **kwargs) -> Path:
    """The conftest tiny Llama with larger random weights, so greedy answers vary (not one token repeated)."""
    from transformers import AutoModelForCausalLM

    build_tiny_llm(folder, seed=seed, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    model.save_pretrained(folder)
    return folder


def build_tiny_embedder(llm_dir: Path, data_dir: Path, out: Path, num_tokens: int = 3) -> Path:
    """A random K-token embedder (sequence + profile sources) for the tiny LLM, saved like a trained one."""
    from user_embed.config import AdapterConfig, LLMConfig, LossConfig, SourceConfig
    from user_embed.training.datamodule import UserDataModule
    from user_embed.training.module import UserEmbedModule

    torch.manual_seed(0)
    module = UserEmbedModule(
        sources=[SourceConfig(kind="sequence", dim=32, layers=1, heads=2, max_len=8),
                 SourceConfig(kind="tabular", dim=32, heads=2)],
        adapter=AdapterConfig(kind="resampler", num_tokens=num_tokens, dim=32, layers=1, heads=2, user_dim=32),
        llm=LLMConfig(name_or_path=str(llm_dir)), loss=LossConfig(contrastive_weight=0.0))
    data = UserDataModule(str(data_dir), max_history=8, item_text_vectors=False, contrastive_texts=False)
    data.setup()
    module.build(data.spec)
    return module.embedder.save_pretrained(out)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    llm = build_varied_llm(root / "llm")
    data = write_tiny_dataset(root / "data")
    embedder = build_tiny_embedder(llm, data, root / "embedder")
    return {"root": root, "llm": llm, "data": data, "embedder": embedder}


@pytest.fixture(scope="module")
def lm(setup):
    from user_embed.model import PersonalizedLM

    return PersonalizedLM.from_pretrained(setup["embedder"], device="cpu")


@pytest.fixture(scope="module")
def users(setup):
    from user_embed.store import UserStore

    return UserStore.from_folder(setup["data"])


def prompt_embeds(lm, users, requests):
    """The requests' prompts as left-padded embeddings with their soft prompts spliced in."""
    examples = lm.examples(users, [r.user_id for r in requests], [r.question for r in requests])
    return lm.prompt_embeds(users, examples)


QUESTIONS = ["which genre has this user watched most ?",
             "what movie did this user watch first after the last drama ? answer with one option",
             "is the user profile more comedy or horror ?"]


def test_batched_left_padded_equals_one_by_one(lm, users):
    from user_embed.generate import Request, SamplingConfig

    requests = [Request(f"u{i}", q) for i, q in enumerate(QUESTIONS)]
    sampling = SamplingConfig(max_new_tokens=8)
    batched = lm.generate_results(users, requests, sampling=sampling, batch_size=3)
    single = lm.generate_results(users, requests, sampling=sampling, batch_size=1)
    assert len({r.prompt_tokens for r in batched}) == 3  # really padded: three lengths
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    assert all(r.error is None and r.output_tokens == len(r.token_ids) > 0 for r in batched)


def test_ignore_eos_generates_exactly_max_new_tokens(lm, users):
    from user_embed.generate import Request, SamplingConfig

    requests = [Request(f"u{i}", q) for i, q in enumerate(QUESTIONS)]
    results = lm.generate_results(users, requests, sampling=SamplingConfig(max_new_tokens=7, ignore_eos=True), batch_size=3)
    assert [r.output_tokens for r in results] == [7, 7, 7]
    free = lm.generate_results(users, requests, sampling=SamplingConfig(max_new_tokens=7), batch_size=3)
    for fixed, short in zip(results, free):  # greedy: the free answer is a prefix of the fixed-length one
        assert fixed.token_ids[: len(short.token_ids)] == short.token_ids


def test_kv_cache_generation_matches_full_forward_greedy(lm, users):
    """generate (KV cache, positions from the mask) == argmax over a full forward of the growing sequence."""
    from user_embed.generate import Request, SamplingConfig

    request = Request("u1", QUESTIONS[1])
    prompt = prompt_embeds(lm, users, [Request("u0", QUESTIONS[0]), request])  # row 1 is left-padded? ensure real rows
    row = prompt.rows()[1]  # (L, d), real positions only
    llm, embedding = lm.llm, lm.llm.get_input_embeddings()
    sequence, expected = row[None], []
    with torch.no_grad():
        for _ in range(6):
            token = int(llm(inputs_embeds=sequence, use_cache=False).logits[0, -1].argmax())
            if token in lm.eos_ids:
                break
            expected.append(token)
            sequence = torch.cat([sequence, embedding(torch.tensor([[token]]))], 1)
    [result] = lm.generate_results(users, [request], sampling=SamplingConfig(max_new_tokens=6))
    assert result.token_ids == expected
    assert result.prompt_tokens == row.shape[0]


def test_soft_prompt_depends_on_user_and_sits_in_the_template(lm, users):
    from user_embed.generate import Request

    a, b = prompt_embeds(lm, users, [Request("u0", QUESTIONS[0]), Request("u1", QUESTIONS[0])]).rows()
    assert a.shape == b.shape  # same question → same prompt length (K soft + template + question)
    differs = (a - b).abs().amax(-1) > 0  # (L,)
    k = lm.embedder.num_tokens
    assert int(differs.sum()) == k  # only the K soft positions depend on the user
    start = int(differs.nonzero()[0])
    assert bool(differs[start:start + k].all())
    assert 0 < start < a.shape[0] - k  # inside the chat template, not at either end


def test_bad_rows_are_reported_and_others_answered(lm, users):
    from user_embed.generate import Request, SamplingConfig

    requests = [Request("u0", QUESTIONS[0]), Request("nobody", QUESTIONS[0]), Request("u1", "   "),
                Request(None, QUESTIONS[0]), Request("u2", QUESTIONS[2])]
    results = lm.generate_results(users, requests, sampling=SamplingConfig(max_new_tokens=4), batch_size=2)
    assert "unknown user 'nobody'" in results[1].error
    assert results[2].error == "empty question"
    assert results[3].error == "missing user_id"
    assert results[0].error is None and results[4].error is None
    assert results[0].answer is not None and results[4].answer is not None
    assert results[1].answer is None


def test_a_failing_row_does_not_sink_its_batch(lm, users):
    from user_embed.generate import Request, SamplingConfig

    too_long = " ".join(["which"] * 600)  # the tiny LLM has 512 positions
    requests = [Request("u0", QUESTIONS[0]), Request("u1", too_long), Request("u2", QUESTIONS[1])]
    results = lm.generate_results(users, requests, sampling=SamplingConfig(max_new_tokens=3), batch_size=3)
    assert "question too long" in results[1].error and "512 positions" in results[1].error
    assert results[0].error is None and results[2].error is None and results[2].output_tokens > 0


def test_stop_strings_and_seeded_sampling(lm, users):
    from user_embed.generate import Request, SamplingConfig
    from user_embed.generate.common import cut_at_stop

    assert cut_at_stop("a b c d", ["c", "d"]) == "a b "
    assert cut_at_stop("a b", ["x"]) == "a b"
    request = Request("u0", QUESTIONS[0])
    [free] = lm.generate_results(users, [request], sampling=SamplingConfig(max_new_tokens=12))
    words = free.answer.split()
    assert len(words) >= 3, free.answer
    stop = words[2]
    [stopped] = lm.generate_results(users, [request], sampling=SamplingConfig(max_new_tokens=12, stop=[stop]))
    assert stop not in stopped.answer
    assert stopped.answer == free.answer[: free.answer.find(stop)]
    assert stopped.output_tokens <= free.output_tokens
    hot = SamplingConfig(max_new_tokens=10, temperature=1.5, top_p=0.95, seed=7)
    first = lm.generate_results(users, [request], sampling=hot)[0].token_ids
    assert lm.generate_results(users, [request], sampling=hot)[0].token_ids == first


def test_sampling_settings_are_checked():
    from user_embed.errors import UserError
    from user_embed.generate import SamplingConfig

    for bad in ({"max_new_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}):
        with pytest.raises(UserError):
            SamplingConfig(**bad)


def test_embedder_for_another_llm_is_refused(setup):
    from user_embed.errors import CheckpointError
    from user_embed.model import PersonalizedLM

    other = build_varied_llm(setup["root"] / "other-llm", seed=1)  # same width, different model
    with pytest.raises(CheckpointError, match="trained for LLM"):
        PersonalizedLM.from_pretrained(setup["embedder"], llm=str(other))
    wider = build_tiny_llm(setup["root"] / "wide-llm", hidden=96, heads=3)
    with pytest.raises(CheckpointError, match="hidden size"):
        PersonalizedLM.from_pretrained(setup["embedder"], llm=str(wider))


def test_missing_vllm_gives_install_hint(lm, users, monkeypatch):
    from user_embed.errors import UserError
    from user_embed.generate import Request

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm → ImportError
    with pytest.raises(UserError, match="vLLM backend needs vLLM"):
        lm.generate_results(users, [Request("u0", "which genre ?")], backend="vllm")
    with pytest.raises(UserError, match="unknown backend"):
        lm.generate_results(users, [Request("u0", "which genre ?")], backend="tgi")


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from user_embed.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_one_question_and_errors(setup, capsys, monkeypatch):
    base = ["generate", "--checkpoint", str(setup["embedder"]), "--data", str(setup["data"]), "--max-new-tokens", "5"]
    code, out, _ = _cli(base + ["--user", "u3", "--question", QUESTIONS[0], "--json"], capsys)
    assert code == 0
    record = json.loads(out)
    assert record["user_id"] == "u3" and record["error"] is None and record["prompt_tokens"] > 3
    code, _, err = _cli(base + ["--user", "ghost", "--question", QUESTIONS[0]], capsys)
    assert code == 2 and "unknown user 'ghost'" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(base + ["--user", "u3", "--question", " "], capsys)
    assert code == 2 and "--question is empty" in err
    code, _, err = _cli(base + ["--user", "u3", "--question", "x", "--llm", str(setup["root"] / "nope")], capsys)
    assert code == 2 and "does not exist" in err
    monkeypatch.setitem(sys.modules, "vllm", None)
    code, _, err = _cli(base + ["--user", "u3", "--question", "x", "--backend", "vllm"], capsys)
    assert code == 2 and "pip install" in err and len(err.strip().splitlines()) == 1


def test_cli_batch_mode_keeps_going(setup, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join([
        json.dumps({"user_id": "u0", "question": QUESTIONS[0]}),
        "{not json",
        json.dumps({"user_id": "ghost", "question": QUESTIONS[1]}),
        json.dumps({"user_id": "u4", "question": ""}),
        json.dumps({"question": "no user"}),
        json.dumps({"user_id": "u5", "question": QUESTIONS[2]}),
    ]) + "\n")
    out = tmp_path / "out" / "answers.jsonl"
    base = ["generate", "--checkpoint", str(setup["embedder"]), "--data", str(setup["data"]), "--max-new-tokens", "4"]
    code, _, err = _cli(base + ["--input", str(rows), "--output", str(out), "--batch-size", "2"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["row"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["error"] is None and records[0]["answer"] is not None and records[0]["latency_s"] > 0
    assert "not JSON" in records[1]["error"]
    assert "unknown user" in records[2]["error"]
    assert records[3]["error"] == "empty question" and records[3]["user_id"] == "u4"
    assert "needs an object" in records[4]["error"]
    assert records[5]["error"] is None and records[5]["output_tokens"] > 0
    assert "(4 with errors)" in err
    assert set(records[0]) >= {"user_id", "question", "answer", "prompt_tokens", "latency_s", "error"}

    parquet = tmp_path / "rows.parquet"
    pl.DataFrame({"user_id": ["u1", "u2"], "question": [QUESTIONS[0], QUESTIONS[1]]}).write_parquet(parquet)
    code, _, err = _cli(base + ["--input", str(parquet), "--output", str(out)], capsys)
    assert code == 0 and all(json.loads(x)["error"] is None for x in out.read_text().splitlines())
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"user": ["u1"], "question": ["q"]}).write_parquet(bad)
    code, _, err = _cli(base + ["--input", str(bad), "--output", str(out)], capsys)
    assert code == 2 and "missing column(s) ['user_id']" in err


def test_compat_folder_for_older_transformers(tmp_path, monkeypatch):
    """transformers < 5 cannot read "TokenizersBackend": a linked copy names PreTrainedTokenizerFast."""
    import transformers

    from user_embed.generate.common import compat_llm_folder

    source = tmp_path / "llm"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend", "x": 1}))
    assert compat_llm_folder(str(source)) == str(source)  # transformers 5 reads it as is
    monkeypatch.setattr(transformers, "__version__", "4.57.1")
    copy = Path(compat_llm_folder(str(source)))
    assert copy != source and (copy / "config.json").resolve() == (source / "config.json").resolve()
    assert json.loads((copy / "tokenizer_config.json").read_text()) == {"tokenizer_class": "PreTrainedTokenizerFast",
                                                                        "x": 1}
    assert json.loads((source / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
