"""The HTTP server on tiny in-process models: a real uvicorn server on a free loopback port, called with the
official ``openai`` client (plain and streaming) and httpx; answers equal ``PersonalizedLM.generate``;
live events change the user's embedding and survive a restart; concurrent requests are batched."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import httpx
import polars as pl
import pytest
import torch
from conftest import write_tiny_dataset
from serving_helpers import ServerThread
from test_generate import build_tiny_embedder, build_varied_llm

QUESTION = "which genre has this user watched most ?"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("serving")
    llm = build_varied_llm(root / "llm")
    data = write_tiny_dataset(root / "data")
    return {"root": root, "llm": llm, "data": data, "embedder": build_tiny_embedder(llm, data, root / "embedder")}


@pytest.fixture(scope="module")
def lm(setup):
    from user_embed.model import PersonalizedLM

    return PersonalizedLM.from_pretrained(setup["embedder"], device="cpu")


@pytest.fixture()
def data_dir(setup, tmp_path) -> Path:
    """A fresh copy of the tiny data folder (each test appends its own events)."""
    return Path(shutil.copytree(setup["data"], tmp_path / "data"))


def serve(lm, data: Path, **settings) -> ServerThread:
    from user_embed.serving import LiveUsers, create_app

    return ServerThread(create_app(lm, LiveUsers.from_folder(data, lm.embedder.spec), **settings))


def client(server: ServerThread, key: str = "unused"):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def expected(lm, data: Path, user: str, method: str = "soft", max_new_tokens: int = 8, stop=None) -> str:
    from user_embed import SamplingConfig
    from user_embed.store import UserStore

    sampling = SamplingConfig(max_new_tokens=max_new_tokens, stop=stop or [])
    return lm.generate(UserStore.from_folder(data), [user], [QUESTION], method=method, sampling=sampling)[0]


def test_openai_client_plain_and_streaming_answers_equal_generate(lm, data_dir):
    with serve(lm, data_dir) as server:
        api = client(server)
        messages = [{"role": "user", "content": QUESTION}]
        answer = api.chat.completions.create(model="user-embed", user="u0", messages=messages, max_tokens=8)
        assert answer.object == "chat.completion" and answer.choices[0].message.role == "assistant"
        text = answer.choices[0].message.content
        assert text == expected(lm, data_dir, "u0")
        assert answer.usage.completion_tokens >= 1 and answer.usage.prompt_tokens > lm.num_tokens
        assert answer.choices[0].finish_reason in ("stop", "length")
        chunks = list(api.chat.completions.create(model="user-embed", user="u0", messages=messages, max_tokens=8,
                                                  stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == answer.choices[0].finish_reason
        assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
        other = api.chat.completions.create(model="user-embed", user="u1", messages=messages, max_tokens=8)
        assert other.choices[0].message.content == expected(lm, data_dir, "u1")
        raw = httpx.post(f"{server.url}/v1/chat/completions", json={
            "model": "user-embed", "user": "u0", "messages": messages, "max_tokens": 8, "stream": True})
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.text.rstrip().endswith("data: [DONE]")


def test_personalization_by_model_id_and_field_and_stop_strings(lm, data_dir):
    with serve(lm, data_dir) as server:
        api = client(server)
        messages = [{"role": "user", "content": QUESTION}]
        models = {m.id for m in api.models.list()}
        assert {"user-embed", "user-embed-soft", "user-embed-text", "user-embed-none"} <= models
        text = api.chat.completions.create(model="user-embed-text", user="u2", messages=messages, max_tokens=8)
        assert text.choices[0].message.content == expected(lm, data_dir, "u2", "text")
        assert text.usage.prompt_tokens > 30  # the history is in the prompt
        plain = api.chat.completions.create(model="user-embed", messages=messages, max_tokens=8)
        assert plain.choices[0].message.content == expected(lm, data_dir, "u2", "none")
        field = api.chat.completions.create(model="user-embed", user="u2", messages=messages, max_tokens=8,
                                            extra_body={"personalization": "text"})
        assert field.choices[0].message.content == text.choices[0].message.content
        full = expected(lm, data_dir, "u3", max_new_tokens=12)
        word = full.split()[1] if len(full.split()) > 2 else full.split()[0]
        cut = api.chat.completions.create(model="user-embed-soft", user="u3", messages=messages, max_tokens=12,
                                          stop=[word])
        assert cut.choices[0].message.content == expected(lm, data_dir, "u3", max_new_tokens=12, stop=[word])
        assert cut.choices[0].finish_reason == "stop" and word not in cut.choices[0].message.content
        streamed = api.chat.completions.create(model="user-embed-soft", user="u3", messages=messages, max_tokens=12,
                                               stop=[word], stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == \
            cut.choices[0].message.content


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(lm, data_dir):
    from openai import AsyncOpenAI

    users = [f"u{i}" for i in range(6)]
    with serve(lm, data_dir, batch_window_ms=200) as server:
        async def ask_all():
            api = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
            answers = await asyncio.gather(*[api.chat.completions.create(
                model="user-embed", user=u, messages=[{"role": "user", "content": QUESTION}], max_tokens=6)
                for u in users])
            await api.close()
            return [a.choices[0].message.content for a in answers]

        answers = asyncio.run(ask_all())
        assert answers == [expected(lm, data_dir, u, max_new_tokens=6) for u in users]
        metrics = httpx.get(f"{server.url}/metrics?format=json").json()
        assert metrics["batch_size"]["count"] < len(users)  # some requests shared a generate call
        assert metrics["cache"]["misses"] == len(users)
        client(server).chat.completions.create(model="user-embed", user="u0", max_tokens=2,
                                               messages=[{"role": "user", "content": QUESTION}])
        after = httpx.get(f"{server.url}/metrics?format=json").json()
        assert after["cache"]["hits"] == metrics["cache"]["hits"] + 1  # u0's encoding is reused
        prometheus = httpx.get(f"{server.url}/metrics").text
        assert 'user_embed_requests_total{route="/v1/chat/completions",status="200"} 7' in prometheus
        assert "user_embed_batch_size_bucket" in prometheus and "user_embed_cache_hits_total" in prometheus


def test_appended_events_change_the_embedding_and_survive_a_restart(lm, data_dir):
    from user_embed.store import UserStore

    before_files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in data_dir.glob("*.parquet")}
    new_events = [{"timestamp": 2_000_000 + i, "item_id": f"i{1 + 4 * i}", "source": "rating", "value": 5}
                  for i in range(3)]  # comedy items, a user who watched drama
    with serve(lm, data_dir) as server:
        url = f"{server.url}/v1/users/u0"
        first = httpx.get(f"{url}/embedding").json()
        conditioned = httpx.get(f"{url}/embedding", params={"question": QUESTION}).json()
        assert first["kind"] == "user_vector" and first["dimension"] == 32
        assert conditioned["kind"] == "soft_prompt_mean" and conditioned["dimension"] == 64
        answer_before = client(server).chat.completions.create(
            model="user-embed", user="u0", max_tokens=8, messages=[{"role": "user", "content": QUESTION}])
        reply = httpx.post(f"{url}/events", json={"events": new_events})
        assert reply.status_code == 201 and reply.json()["appended"] == 3 and reply.json()["version"] == 1
        second = httpx.get(f"{url}/embedding").json()
        assert second["embedding"] != first["embedding"] and second["version"] == 1
        answer_after = client(server).chat.completions.create(
            model="user-embed", user="u0", max_tokens=8, messages=[{"role": "user", "content": QUESTION}])
        new_user = httpx.post(f"{server.url}/v1/users/newcomer/events", json={"events": new_events[:1]})
        assert new_user.status_code == 201 and new_user.json()["new_user"] is True
        assert httpx.get(f"{server.url}/v1/users/newcomer/embedding").status_code == 200
    # the served vector is the library's vector over the folder's events + the new ones
    folder = UserStore.from_folder(data_dir)
    merged = pl.concat([folder.events, pl.DataFrame([{"user_id": "u0", "text": None, **e} for e in new_events],
                                                    schema=folder.events.schema)])
    store = UserStore.from_frames(merged, folder.items, folder.users)
    torch.testing.assert_close(torch.tensor(second["embedding"]), lm.embed(store, ["u0"])[0], atol=1e-5, rtol=1e-4)
    sampling_answer = lm.generate(store, ["u0"], [QUESTION], sampling=__import__("user_embed").SamplingConfig(
        max_new_tokens=8))[0]
    assert answer_after.choices[0].message.content == sampling_answer
    assert answer_before.choices[0].message.content == expected(lm, data_dir, "u0")
    # a new server on the same folder reads the acknowledged events back; the folder's own files are untouched
    with serve(lm, data_dir) as server:
        again = httpx.get(f"{server.url}/v1/users/u0/embedding").json()
        assert again["embedding"] == second["embedding"] and again["version"] == 1
        assert httpx.get(f"{server.url}/v1/users/newcomer/embedding").status_code == 200
    assert before_files == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in data_dir.glob("*.parquet")}
    assert sorted(p.name for p in (data_dir / "live_events").iterdir()) == ["events.jsonl"]


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_a_fresh_line(lm, data_dir):
    with serve(lm, data_dir) as server:
        ok = httpx.post(f"{server.url}/v1/users/u1/events", json={"events": [{"timestamp": 5, "item_id": "i2"}]})
        assert ok.status_code == 201
    log = data_dir / "live_events" / "events.jsonl"
    with open(log, "ab") as handle:  # a server killed in the middle of writing a record
        handle.write(b'{"user_id":"u1","received_at":1,"events":[{"timestamp":6,"item_')
    with serve(lm, data_dir) as server:
        health = httpx.get(f"{server.url}/health").json()
        assert health["status"] == "ok"
        assert server.server.config.app.state.server.users.live["u1"] == [
            {"timestamp": 5, "source": "event", "item_id": "i2", "value": None, "text": None}]
        ok = httpx.post(f"{server.url}/v1/users/u1/events", json={"events": [{"timestamp": 7, "item_id": "i3"}]})
        assert ok.status_code == 201 and ok.json()["live_events"] == 2
    with serve(lm, data_dir) as server:
        assert [e["timestamp"] for e in server.server.config.app.state.server.users.live["u1"]] == [5, 7]


@pytest.mark.slow
def test_serving_the_real_offline_models(tmp_path, real_ml100k):
    """SmolLM2-135M-Instruct and MovieLens-100k (an untrained embedder for that pair): the openai client's
    streamed answer for user 196 equals generate, and a posted rating changes the user's vector."""
    from data_pipelines.prepare import prepare_movielens_100k
    from user_embed import SamplingConfig
    from user_embed.config import AdapterConfig, LLMConfig, SourceConfig
    from user_embed.data.spec import DataSpec
    from user_embed.model import PersonalizedLM
    from user_embed.store import UserStore

    data = prepare_movielens_100k(tmp_path / "ml-100k", source=real_ml100k, build_qa=False,
                                  report_to=lambda *a, **k: None)
    store = UserStore.from_folder(data)
    torch.manual_seed(0)
    lm = PersonalizedLM.build([SourceConfig(kind="sequence", name="ratings"), SourceConfig(kind="tabular", dim=64)],
                              AdapterConfig(num_tokens=4), DataSpec.from_tables(store.events, store.items,
                                                                                store.users), LLMConfig()).eval()
    question = "Which genre should I watch tonight?"
    want = lm.generate(store, ["196"], [question], sampling=SamplingConfig(max_new_tokens=12))[0]
    with serve(lm, data) as server:
        chunks = client(server).chat.completions.create(model="user-embed", user="196", max_tokens=12, stream=True,
                                                        messages=[{"role": "user", "content": question}])
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
        before = httpx.get(f"{server.url}/v1/users/196/embedding").json()["embedding"]
        item = store.items["item_id"][0]
        assert httpx.post(f"{server.url}/v1/users/196/events", timeout=60, json={
            "events": [{"timestamp": 900_000_000, "item_id": item, "source": "rating", "value": 1}]}).status_code == 201
        assert httpx.get(f"{server.url}/v1/users/196/embedding").json()["embedding"] != before
