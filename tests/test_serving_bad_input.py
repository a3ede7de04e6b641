"""Every bad request gets one JSON error in OpenAI's shape naming the field or id — a missing or wrong key
(401), an unknown user or model (404), a body too large (413), malformed JSON (400), wrong types, empty or
over-long messages, n > 1 and invalid events (422, nothing appended) — and the server keeps serving."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from conftest import write_tiny_dataset
from serving_helpers import ServerThread
from test_generate import build_tiny_embedder, build_varied_llm

KEY = "test-key-123"
GOOD = {"model": "user-embed", "user": "u0", "max_tokens": 3,
        "messages": [{"role": "user", "content": "which genre ?"}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory, one_torch_thread):
    from user_embed.model import PersonalizedLM
    from user_embed.serving import LiveUsers, create_app

    root = tmp_path_factory.mktemp("serving-bad")
    llm = build_varied_llm(root / "llm")
    data = write_tiny_dataset(root / "data")
    lm = PersonalizedLM.from_pretrained(build_tiny_embedder(llm, data, root / "embedder"), device="cpu")
    copy = Path(shutil.copytree(data, root / "served"))
    app = create_app(lm, LiveUsers.from_folder(copy, lm.embedder.spec), api_key=KEY, max_body_bytes=20_000,
                     max_messages=4, max_message_chars=500, max_tokens_limit=64, default_max_tokens=16)
    with ServerThread(app) as running:
        running.data = copy
        yield running


def call(server, method: str = "POST", path: str = "/v1/chat/completions", key: str | None = KEY, **kwargs):
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=60, **kwargs)


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def still_serving(server) -> None:
    reply = call(server, json=GOOD)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] is not None


def test_the_key_is_required_everywhere_but_health(server):
    from openai import AuthenticationError, OpenAI

    assert httpx.get(f"{server.url}/health").status_code == 200
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/metrics"),
                         ("GET", "/v1/users/u0/embedding"), ("POST", "/v1/users/u0/events")):
        assert "missing API key" in error_of(call(server, method, path, key=None, json=GOOD), 401)["message"]
        assert error_of(call(server, method, path, key="wrong", json=GOOD), 401)["code"] == "invalid_api_key"
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert [m.id for m in OpenAI(base_url=f"{server.url}/v1", api_key=KEY).models.list()][0] == "user-embed"
    still_serving(server)


@pytest.mark.parametrize("change, status, names", [
    ({"user": "nobody"}, 404, "nobody"),
    ({"model": "gpt-4"}, 404, "gpt-4"),
    ({"n": 2}, 422, "n"),
    ({"messages": []}, 422, "messages"),
    ({"messages": [{"role": "user", "content": "   "}]}, 422, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x" * 501}]}, 422, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "hi"}] * 5}, 422, "messages"),
    ({"messages": [{"role": "user", "content": 7}]}, 422, "messages[0].content"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, 422, "role"),
    ({"messages": "hello"}, 422, "messages"),
    ({"max_tokens": "3"}, 422, "max_tokens"),
    ({"max_tokens": 0}, 422, "max_tokens"),
    ({"max_tokens": 65}, 422, "max_tokens"),
    ({"temperature": -1}, 422, "temperature"),
    ({"top_p": 0}, 422, "top_p"),
    ({"stream": "yes"}, 422, "stream"),
    ({"user": 196}, 422, "user"),
    ({"model": "user-embed-soft", "user": None}, 422, "user"),
    ({"model": None}, 422, "model"),
])
def test_bad_chat_requests(server, change, status, names):
    error = error_of(call(server, json={**GOOD, **change}), status)
    assert names in error["message"], error
    still_serving(server)


def test_unknown_fields_are_ignored_and_multi_turn_is_read(server):
    body = {**GOOD, "frequency_penalty": 0.5, "logit_bias": {}, "tools": [], "something_new": {"x": 1},
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"},
                         {"role": "user", "content": [{"type": "text", "text": "which genre ?"}]}]}
    assert call(server, json=body).status_code == 200


def test_malformed_bodies_and_sizes(server):
    error = error_of(call(server, content=b'{"model": "user-embed", "messages": [',
                          headers={"Content-Type": "application/json"}), 400)
    assert "not valid JSON" in error["message"]
    assert error_of(call(server, content=b"[1, 2]", headers={"Content-Type": "application/json"}), 422)
    assert error_of(call(server, content=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400)
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 30_000}]}
    assert "too large" in error_of(call(server, json=big), 413)["message"]

    def chunked():  # no Content-Length: the limit holds while reading
        for _ in range(30):
            yield b"x" * 1000

    assert error_of(call(server, content=chunked(), headers={"Content-Type": "application/json"}), 413)
    assert error_of(call(server, "GET", "/v1/nowhere"), 404)
    assert error_of(call(server, "GET", "/v1/chat/completions"), 405)
    still_serving(server)


@pytest.mark.parametrize("event, names", [
    ({"timestamp": "yesterday", "item_id": "i1"}, "events[0].timestamp"),
    ({"timestamp": 1.5, "item_id": "i1"}, "events[0].timestamp"),
    ({"timestamp": -5, "item_id": "i1"}, "events[0].timestamp"),
    ({"timestamp": 1_700_000_000_000, "item_id": "i1"}, "milliseconds"),
    ({"timestamp": 10, "item_id": "no-such-item"}, "unknown item 'no-such-item'"),
    ({"timestamp": 10, "item_id": "i1", "value": "4"}, "events[0].value"),
    ({"timestamp": 10, "item_id": "i1", "value": True}, "events[0].value"),
    ({"timestamp": 10}, "events[0].item_id"),
    ({"timestamp": 10, "item_id": "i1", "source": ""}, "events[0].source"),
])
def test_bad_events_are_refused_and_nothing_is_appended(server, event, names):
    log = server.data / "live_events" / "events.jsonl"
    before = log.read_bytes() if log.exists() else b""
    body = {"events": [{"timestamp": 10, "item_id": "i1"}, event]}
    body = {"events": [event]} if "events[0]" in names else body
    error = error_of(call(server, path="/v1/users/u0/events", json=body), 422)
    assert names in error["message"], error
    assert (log.read_bytes() if log.exists() else b"") == before
    still_serving(server)


def test_bad_user_endpoints(server):
    assert "unknown user 'ghost'" in error_of(call(server, "GET", "/v1/users/ghost/embedding"), 404)["message"]
    assert error_of(call(server, "GET", "/v1/users/u0/embedding", params={"question": " "}), 422)["param"] == "question"
    assert error_of(call(server, path="/v1/users/u0/events", json={"events": []}), 422)
    assert error_of(call(server, path="/v1/users/u0/events", json={"rows": [1]}), 422)
    assert error_of(call(server, "GET", "/metrics", params={"format": "xml"}), 422)
    still_serving(server)


def test_the_vllm_backend_fails_in_one_clear_line_when_vllm_is_missing(server):
    import importlib.util

    from user_embed.errors import UserError
    from user_embed.serving import create_app

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    state = server.server.config.app.state.server
    with pytest.raises(UserError, match="needs vLLM"):
        create_app(state.lm, state.users, backend="vllm")
