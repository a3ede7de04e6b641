"""`user-embed serve` as a real process: it starts from the CLI, and a server killed (SIGKILL) while events
are being appended loses no event it acknowledged — a new server on the same folder reads every one back."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from conftest import write_tiny_dataset
from test_generate import build_tiny_embedder, build_varied_llm

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_killed_mid_append_loses_no_acknowledged_event(tmp_path, one_torch_thread):
    from user_embed.model import PersonalizedLM
    from user_embed.serving import LiveUsers

    llm = build_varied_llm(tmp_path / "llm")
    data = write_tiny_dataset(tmp_path / "data")
    embedder = build_tiny_embedder(llm, data, tmp_path / "embedder")
    served = Path(shutil.copytree(data, tmp_path / "served"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "USER_EMBED_API_KEY": "k"}
    process = subprocess.Popen([sys.executable, "-m", "user_embed.cli", "serve", "--checkpoint", str(embedder),
                                "--data", str(served), "--port", str(port), "--log-level", "warning"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert httpx.get(f"{url}/v1/models").status_code == 401  # the key came from the environment
        acknowledged: list[int] = []
        stop = threading.Event()

        def post(worker: int) -> None:
            for n in range(10_000):
                if stop.is_set():
                    return
                stamp = 3_000_000 + worker * 100_000 + n
                try:
                    reply = httpx.post(f"{url}/v1/users/u{worker}/events", headers=headers, timeout=10,
                                       json={"events": [{"timestamp": stamp, "item_id": "i1", "value": 3}]})
                except httpx.HTTPError:
                    return  # the server is gone: this append was not acknowledged
                if reply.status_code == 201:
                    acknowledged.append(stamp)

        threads = [threading.Thread(target=post, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        while len(acknowledged) < 40:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # appends are in flight
        process.wait(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    lm = PersonalizedLM.from_pretrained(embedder, device="cpu")
    users = LiveUsers.from_folder(served, lm.embedder.spec)
    logged = {event["timestamp"] for events in users.live.values() for event in events}
    assert len(acknowledged) >= 40 and set(acknowledged) <= logged
    assert all(users.version(f"u{w}") >= 1 for w in range(4))
