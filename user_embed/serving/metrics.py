"""Server metrics — requests, latency, time to first token, batch sizes, cache hits — as Prometheus text or JSON.

A small in-process registry (counters and cumulative histograms) keeps the server free of a metrics
dependency; ``GET /metrics`` renders it in the Prometheus text format, ``GET /metrics?format=json`` as JSON.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one: above every bucket
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, count in zip([*map(str, self.buckets), "+Inf"], self.counts):
            total += count
            out.append((bound, total))
        return out


class Metrics:
    """Thread-safe counters and histograms; the cache's hits/misses are read from it when rendering."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)  # (route, status) → count
        self.latency: dict[str, Histogram] = defaultdict(lambda: Histogram(LATENCY_BUCKETS))  # per route
        self.ttft = Histogram(LATENCY_BUCKETS)
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.completion_tokens = 0
        self.prompt_tokens = 0
        self.events_appended = 0
        self.cache = None  # the EncodingCache, for hits and misses

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency[route].observe(seconds)

    def first_token(self, seconds: float) -> None:
        with self._lock:
            self.ttft.observe(seconds)

    def batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes.observe(size)

    def tokens(self, prompt: int, completion: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion

    def events(self, count: int) -> None:
        with self._lock:
            self.events_appended += count

    def to_json(self) -> dict:
        with self._lock:
            cache = self.cache
            return {
                "requests": [{"route": r, "status": s, "count": c} for (r, s), c in sorted(self.requests.items())],
                "latency_s": {r: _histogram_json(h) for r, h in sorted(self.latency.items())},
                "time_to_first_token_s": _histogram_json(self.ttft),
                "batch_size": _histogram_json(self.batch_sizes),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "events_appended": self.events_appended,
                "cache": {"hits": cache.hits if cache else 0, "misses": cache.misses if cache else 0,
                          "entries": len(cache) if cache else 0},
            }

    def to_prometheus(self) -> str:
        with self._lock:
            lines = ["# HELP user_embed_requests_total HTTP requests by route and status.",
                     "# TYPE user_embed_requests_total counter"]
            lines += [f'user_embed_requests_total{{route="{r}",status="{s}"}} {c}'
                      for (r, s), c in sorted(self.requests.items())]
            lines += ["# HELP user_embed_request_seconds Request latency by route.",
                      "# TYPE user_embed_request_seconds histogram"]
            for route, histogram in sorted(self.latency.items()):
                lines += _histogram_lines("user_embed_request_seconds", histogram, f'route="{route}"')
            lines += ["# HELP user_embed_time_to_first_token_seconds Time from request to its first token.",
                      "# TYPE user_embed_time_to_first_token_seconds histogram"]
            lines += _histogram_lines("user_embed_time_to_first_token_seconds", self.ttft)
            lines += ["# HELP user_embed_batch_size Requests generated together.",
                      "# TYPE user_embed_batch_size histogram"]
            lines += _histogram_lines("user_embed_batch_size", self.batch_sizes)
            cache = self.cache
            for name, kind, value, help_ in (
                    ("user_embed_prompt_tokens_total", "counter", self.prompt_tokens, "Prompt positions read."),
                    ("user_embed_completion_tokens_total", "counter", self.completion_tokens, "Tokens generated."),
                    ("user_embed_events_appended_total", "counter", self.events_appended, "Live events appended."),
                    ("user_embed_cache_hits_total", "counter", cache.hits if cache else 0,
                     "User encodings served from the cache."),
                    ("user_embed_cache_misses_total", "counter", cache.misses if cache else 0,
                     "User encodings computed."),
                    ("user_embed_cache_entries", "gauge", len(cache) if cache else 0, "Users in the cache.")):
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
            return "\n".join(lines) + "\n"


def _histogram_json(histogram: Histogram) -> dict:
    return {"count": histogram.count, "sum": round(histogram.sum, 6),
            "buckets": {bound: count for bound, count in histogram.cumulative()}}


def _histogram_lines(name: str, histogram: Histogram, labels: str = "") -> list[str]:
    sep = "," if labels else ""
    lines = [f'{name}_bucket{{{labels}{sep}le="{bound}"}} {count}' for bound, count in histogram.cumulative()]
    suffix = f"{{{labels}}}" if labels else ""
    return lines + [f"{name}_sum{suffix} {histogram.sum:.6f}", f"{name}_count{suffix} {histogram.count}"]
