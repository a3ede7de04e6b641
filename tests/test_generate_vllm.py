"""vLLM backend: greedy fp32 answers equal the HF backend's token for token (same checkpoint).

Runs in the separate vLLM environment (``bash .ci/vllm.sh`` builds ``.venv-vllm`` and runs
``pytest -m vllm``); skipped only where vLLM is not importable.
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed (build .venv-vllm with .ci/vllm.sh)")

from conftest import write_tiny_dataset  # noqa: E402
from test_generate import QUESTIONS, build_tiny_embedder, build_varied_llm  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from user_embed.model import PersonalizedLM
    from user_embed.store import UserStore

    root = tmp_path_factory.mktemp("generate-vllm")
    llm = build_varied_llm(root / "llm")  # head_dim 32: accepted by vLLM's CPU attention
    data = write_tiny_dataset(root / "data")
    embedder = build_tiny_embedder(llm, data, root / "embedder")
    return {"lm": PersonalizedLM.from_pretrained(embedder, device="cpu"), "users": UserStore.from_folder(data),
            "embedder": embedder, "data": data}


def generate(setup, requests, **options):
    return setup["lm"].generate_results(setup["users"], requests, **options)


def test_greedy_vllm_equals_hf_token_for_token(setup):
    from user_embed.generate import Request, SamplingConfig

    requests = [Request(f"u{i}", QUESTIONS[i % len(QUESTIONS)]) for i in range(6)]
    sampling = SamplingConfig(max_new_tokens=16)
    hf = generate(setup, requests, backend="hf", sampling=sampling, batch_size=6)
    vllm = generate(setup, requests, backend="vllm", sampling=sampling, batch_size=6)
    assert all(r.error is None for r in hf + vllm), [r.error for r in hf + vllm]
    assert len({tuple(r.token_ids) for r in hf}) > 1  # the users really get different answers
    assert [r.token_ids for r in vllm] == [r.token_ids for r in hf]
    assert [r.answer for r in vllm] == [r.answer for r in hf]
    assert [r.prompt_tokens for r in vllm] == [r.prompt_tokens for r in hf]
    fixed = SamplingConfig(max_new_tokens=16, ignore_eos=True)  # the throughput benchmark's setting
    hf_fixed = generate(setup, requests, backend="hf", sampling=fixed, batch_size=6)
    vllm_fixed = generate(setup, requests, backend="vllm", sampling=fixed, batch_size=6)
    assert [r.output_tokens for r in hf_fixed] == [r.output_tokens for r in vllm_fixed] == [16] * 6
    assert [r.token_ids for r in vllm_fixed] == [r.token_ids for r in hf_fixed]


def test_vllm_stop_strings_sampling_and_bad_rows(setup):
    from user_embed.generate import Request, SamplingConfig

    request = Request("u2", QUESTIONS[0])
    [free] = generate(setup, [request], backend="vllm", sampling=SamplingConfig(max_new_tokens=12))
    stop = free.answer.split()[2]
    [cut] = generate(setup, [request], backend="vllm", sampling=SamplingConfig(max_new_tokens=12, stop=[stop]))
    assert cut.answer == free.answer[: free.answer.find(stop)]
    hot = SamplingConfig(max_new_tokens=8, temperature=1.2, top_p=0.9, seed=3)
    first = generate(setup, [request], backend="vllm", sampling=hot)[0].token_ids
    assert generate(setup, [request], backend="vllm", sampling=hot)[0].token_ids == first
    results = generate(setup, [Request("ghost", "x"), request, Request("u1", "")], backend="vllm",
                       sampling=SamplingConfig(max_new_tokens=4))
    assert "unknown user" in results[0].error and results[2].error == "empty question"
    assert results[1].error is None and results[1].output_tokens > 0


def test_vllm_cli_batch(setup, tmp_path, capsys):
    from user_embed.cli import main

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"user_id": u, "question": QUESTIONS[0]}) for u in ["u0", "ghost", "u3"]))
    out = tmp_path / "answers.jsonl"
    code = main(["generate", "--checkpoint", str(setup["embedder"]), "--data", str(setup["data"]),
                 "--backend", "vllm", "--input", str(rows), "--output", str(out), "--max-new-tokens", "6"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["error"] is None for r in records] == [True, False, True]
    assert all(r["output_tokens"] > 0 for r in (records[0], records[2]))
