"""A straightforward pandas version of the benchmarked pipeline (the baseline of ``pipeline.py``).

The same steps as our polars pipeline, written the way one would in plain pandas:

1. ``read``: ``pd.read_csv`` of the events and items files (ids as strings).
2. ``clean``: drop and count, in the same order as :func:`data_pipelines.generic.build_tables`,
   rows with a missing user/item id, a missing or non-numeric timestamp, a missing,
   non-numeric or non-finite rating, duplicate (user, item, timestamp) rows, and events of
   unknown items.
3. ``sequences``: sort by (user, timestamp, item) and collect each user's item, time and
   rating lists (``groupby().agg(list)``).
4. ``userqa``: per-user cutoff (the event at position ``floor(0.8 n)``), eligible users
   (>= 10 history events and at least one future event), user-disjoint splits by a hash of
   (seed, user), then ``groupby().apply`` of one Python function per user that writes the
   seven UserQA questions (recent_category, category_count, next_category, next_rating,
   longterm_top_category, recent_top_category, interest_shift) with popularity-weighted
   distractors, shuffled options and question text, plus the user's description text;
   finally answers are downsampled per task and split so that no answer exceeds half.

It is a baseline, not a second implementation to maintain: the answers follow the same
rules, but random draws differ from ours (e.g. the count bucket is drawn uniformly per user
rather than weighted across users), so only the counts of cleaned events and eligible users
are expected to match exactly.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter

import numpy as np
import pandas as pd

HISTORY_FRACTION = 0.8
MIN_HISTORY = 10
COUNT_WINDOW = 10
COUNT_BUCKETS = [("0", 0, 0), ("1-2", 1, 2), ("3-5", 3, 5), ("6-10", 6, 10)]
RECENT_WINDOW = 20
DISTRACTOR_MAX_RATIO = 0.5
MIN_SHIFT = 0.05
HIGH_RATING = 4.0
MAX_MAJORITY_SHARE = 0.5
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


# --------------------------------------------------------------------------- read and clean


def read(events_csv: str, items_csv: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    events = pd.read_csv(events_csv, dtype={"user_id": str, "item_id": str}, low_memory=False)
    items = pd.read_csv(items_csv, dtype={"item_id": str, "title": str, "genres": str})
    return events, items


def clean(events: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Cleaned events (user_id, item_id, timestamp, rating) and items (item_id, title, categories)."""
    dropped: dict[str, int] = {}

    def drop(df: pd.DataFrame, bad: pd.Series, reason: str) -> pd.DataFrame:
        n = int(bad.sum())
        if n:
            dropped[reason] = n
        return df[~bad] if n else df

    items = items.dropna(subset=["item_id"]).drop_duplicates("item_id")
    items = items.assign(categories=items["genres"].fillna("").str.split("|"))[["item_id", "title", "categories"]]

    events = events.rename(columns={"timestamp": "timestamp_raw", "rating": "rating_raw"})
    events["timestamp"] = pd.to_numeric(events["timestamp_raw"], errors="coerce")
    events["rating"] = pd.to_numeric(events["rating_raw"], errors="coerce")
    events = drop(events, events["user_id"].isna(), "missing user id")
    events = drop(events, events["item_id"].isna(), "missing item id")
    events = drop(events, events["timestamp_raw"].isna(), "missing timestamp")
    events = drop(events, events["timestamp"].isna(), "timestamp not a number")
    events = drop(events, events["rating_raw"].isna(), "missing value")
    events = drop(events, events["rating"].isna(), "value not a number")
    events = drop(events, ~np.isfinite(events["rating"]), "value not finite")
    events = drop(events, events.duplicated(["user_id", "item_id", "timestamp"]), "duplicate event")
    events = drop(events, ~events["item_id"].isin(items["item_id"]), "item not in the items table")
    events = events[["user_id", "item_id", "timestamp", "rating"]].astype({"timestamp": "int64"})
    return events, items, dropped


def sequences(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events sorted per user by time, and one row per user with its item/time/rating lists."""
    events = events.sort_values(["user_id", "timestamp", "item_id"], ignore_index=True)
    per_user = events.groupby("user_id", sort=False).agg({"item_id": list, "timestamp": list, "rating": list})
    return events, per_user


# --------------------------------------------------------------------------- UserQA


def split_of(user_id: str, seed: int) -> str:
    digest = hashlib.blake2b(f"{seed}\x00{user_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    return "train" if u < SPLIT_FRACTIONS[0] else "val" if u < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1] else "test"


def with_cutoffs(events: pd.DataFrame) -> pd.DataFrame:
    """Add pos, n, cutoff, n_hist per event (events sorted per user); keep eligible users only."""
    grouped = events.groupby("user_id", sort=False)
    events = events.assign(pos=grouped.cumcount(), n=grouped["user_id"].transform("size"))
    cut_index = np.floor(events["n"] * HISTORY_FRACTION + 1e-9).astype("int64")
    cut_rows = events[events["pos"] == cut_index]
    events["cutoff"] = events["user_id"].map(cut_rows.set_index("user_id")["timestamp"])
    events["n_hist"] = (events["timestamp"] < events["cutoff"]).groupby(events["user_id"]).transform("sum")
    eligible = (events["n_hist"] >= MIN_HISTORY) & (events["n_hist"] < events["n"])
    return events[eligible]


class QuestionWriter:
    """Writes one user's questions and text; holds the item lookups, popularity and the rng."""

    def __init__(self, items: pd.DataFrame, popularity: pd.Series, seed: int):
        self.categories = dict(zip(items["item_id"], items["categories"]))
        self.titles = dict(zip(items["item_id"], items["title"]))
        self.vocab = sorted(popularity.index)
        self.weight = {c: float(popularity.get(c, 0)) + 1.0 for c in self.vocab}
        self.rng = np.random.default_rng(seed)
        self.seed = seed

    # ---- helpers
    def distractor(self, excluded: set[str], answer: str) -> str | None:
        """One category not in ``excluded``, by popularity; half the time one more popular than the answer."""
        allowed = [c for c in self.vocab if c not in excluded and c != answer]
        if not allowed:
            return None
        if self.rng.random() < 0.5:
            harder = [c for c in allowed if self.weight[c] > self.weight.get(answer, 0)]
            allowed = harder or allowed
        w = np.array([self.weight[c] for c in allowed])
        return allowed[self.rng.choice(len(allowed), p=w / w.sum())]

    def question(self, user_id: str, task: str, family: str, text: str, answer: str, options: list[str],
                 cutoff: int, split: str) -> dict:  # fmt: skip
        options = [options[i] for i in self.rng.permutation(len(options))]
        return {"user_id": user_id, "question": f"{text} Options: {', '.join(options)}. Answer with one option.",
                "answer": answer, "options": options, "task": task, "family": family, "cutoff": cutoff,
                "split": split}  # fmt: skip

    def category_question(self, user_id: str, task: str, family: str, text: str, cats: list[str],
                          cutoff: int, split: str) -> dict | None:  # fmt: skip
        if not cats:
            return None
        answer = cats[self.rng.integers(len(cats))]
        other = self.distractor(set(cats), answer)
        if other is None:
            return None
        return self.question(user_id, task, family, text, answer, [answer, other], cutoff, split)

    def top_question(self, user_id: str, task: str, text: str, cats: list[list[str]], cutoff: int,
                     split: str) -> dict | None:  # fmt: skip
        counts = Counter(c for item in cats for c in item)
        if not counts:
            return None
        top = max(counts.values())
        tops = sorted(c for c, n in counts.items() if n == top)
        answer = tops[self.rng.integers(len(tops))]
        too_close = {c for c, n in counts.items() if n > DISTRACTOR_MAX_RATIO * top}
        other = self.distractor(too_close, answer)
        if other is None:
            return None
        return self.question(user_id, task, "interest_perception", text, answer, [answer, other], cutoff, split)

    # ---- one user
    def user(self, g: pd.DataFrame) -> dict:
        """The user's questions (a list of qa rows) and description text; ``g`` = the user's events, sorted."""
        user_id = g.name  # the group key
        n_hist, cutoff = int(g["n_hist"].iat[0]), int(g["cutoff"].iat[0])
        split = split_of(user_id, self.seed)
        item_ids = g["item_id"].tolist()
        hist_cats = [self.categories[i] for i in item_ids[:n_hist]]
        next_item, next_rating = item_ids[n_hist], float(g["rating"].iat[n_hist])
        out = []

        out.append(self.category_question(
            user_id, "recent_category", "sequence_understanding",
            "Which of these categories does the most recent item this user interacted with have?",
            hist_cats[-1], cutoff, split))  # fmt: skip

        window = Counter(c for item in hist_cats[-COUNT_WINDOW:] for c in item)
        buckets: dict[str, list[str]] = {}
        for category in self.vocab:
            count = window.get(category, 0)
            label = next(lab for lab, lo, hi in COUNT_BUCKETS if lo <= count <= hi)
            buckets.setdefault(label, []).append(category)
        if len(hist_cats) >= COUNT_WINDOW and buckets:
            labels = sorted(buckets)
            label = labels[self.rng.integers(len(labels))]
            choices = buckets[label]
            category = choices[self.rng.integers(len(choices))]
            out.append(self.question(
                user_id, "category_count", "sequence_understanding",
                f"How many of the last {COUNT_WINDOW} items this user interacted with have the category {category}?",
                label, [lab for lab, _, _ in COUNT_BUCKETS], cutoff, split))  # fmt: skip

        out.append(self.category_question(
            user_id, "next_category", "action_prediction", "Which of these categories does this user's next item have?",
            self.categories[next_item], cutoff, split))  # fmt: skip
        out.append(self.question(
            user_id, "next_rating", "action_prediction",
            f'This user\'s next item is "{self.titles[next_item]}". Will this user give it a high rating '
            f"({HIGH_RATING:g} or more) or a low one?",
            "high" if next_rating >= HIGH_RATING else "low", ["high", "low"], cutoff, split))  # fmt: skip

        out.append(self.top_question(
            user_id, "longterm_top_category", "Which of these categories has this user interacted with most overall?",
            hist_cats, cutoff, split))  # fmt: skip
        recent = min(n_hist, RECENT_WINDOW)
        out.append(self.top_question(
            user_id, "recent_top_category",
            f"Which of these categories is most frequent among the last {recent} items this user interacted with?",
            hist_cats[-RECENT_WINDOW:], cutoff, split))  # fmt: skip

        n_old = n_hist // 2
        old = Counter(c for item in hist_cats[:n_old] for c in item)
        new = Counter(c for item in hist_cats[n_old:] for c in item)
        changes = {c: new[c] / (n_hist - n_old) - old[c] / n_old for c in set(old) | set(new)}
        changes = {c: v for c, v in changes.items() if abs(v) > MIN_SHIFT}
        if changes:
            biggest = max(abs(v) for v in changes.values())
            candidates = sorted(c for c, v in changes.items() if abs(v) == biggest)
            category = candidates[self.rng.integers(len(candidates))]
            out.append(self.question(
                user_id, "interest_shift", "interest_perception",
                f"Comparing the older and the newer half of this user's history, is the category {category} "
                "more or less frequent in the newer half?",
                "more" if changes[category] > 0 else "less", ["more", "less"], cutoff, split))  # fmt: skip
        text = self.text(n_hist, item_ids[:n_hist], g["timestamp"].iloc[:n_hist].tolist(),
                         g["rating"].iloc[:n_hist].tolist())  # fmt: skip
        return {"questions": [q for q in out if q is not None], "text": text}

    def text(self, n_hist: int, item_ids: list[str], timestamps: list[int], ratings: list[float]) -> str:
        first, last = (time.strftime("%Y-%m", time.gmtime(ts)) for ts in (min(timestamps), max(timestamps)))
        counts = Counter(c for i in item_ids for c in self.categories[i])
        top = ", ".join(f"{c} ({n})" for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
        recent = ", ".join(
            f"{self.titles[i]} ({'/'.join(self.categories[i])})" if self.categories[i] else self.titles[i]
            for i in reversed(item_ids[-5:])
        )
        return (f"Interacted with {n_hist} items between {first} and {last}; mean rating "
                f"{sum(ratings) / len(ratings):.1f}. Top categories: {top}. Most recent first: {recent}.")  # fmt: skip


def balance(qa: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per task and split, keep at most ``cap`` rows per answer so no answer exceeds the max share."""
    qa = qa.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    keep = pd.Series(True, index=qa.index)
    for _, group in qa.groupby(["task", "split"]):
        counts = group["answer"].value_counts()
        if counts.max() <= MAX_MAJORITY_SHARE * counts.sum():
            continue
        caps = np.arange(1, int(counts.max()) + 1)
        kept = np.minimum(counts.to_numpy()[None, :], caps[:, None]).sum(axis=1)
        feasible = caps[caps <= MAX_MAJORITY_SHARE * kept]
        cap = int(feasible.max()) if len(feasible) else 0
        if cap:
            keep[group.index] = group.groupby("answer").cumcount() < cap
    return qa[keep].sort_values(["user_id", "task"], ignore_index=True)


def build_userqa(events: pd.DataFrame, items: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The qa and texts frames from events sorted per user, and the number of eligible users."""
    events = with_cutoffs(events)
    history = events[events["pos"] < events["n_hist"]]
    popularity = history["item_id"].map(dict(zip(items["item_id"], items["categories"]))).explode().value_counts()
    writer = QuestionWriter(items, popularity, seed)
    grouped = events[["user_id", "item_id", "rating", "timestamp", "n_hist", "cutoff"]].groupby("user_id", sort=True)
    per_user = grouped.apply(writer.user)
    qa = pd.DataFrame([q for out in per_user for q in out["questions"]])
    qa = balance(qa, seed)
    texts = pd.DataFrame({"user_id": per_user.index, "text": [out["text"] for out in per_user]})
    return qa, texts, len(texts)


# --------------------------------------------------------------------------- entry point


def run_pandas(events_csv: str, items_csv: str, seed: int) -> dict:
    """All steps with per-step wall seconds (``seconds``), CPU seconds (``cpu_seconds``) and counts."""
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    start, start_cpu = time.perf_counter(), time.process_time()

    def lap(step: str, t: float, c: float) -> tuple[float, float]:
        now, now_cpu = time.perf_counter(), time.process_time()
        wall[step], cpu[step] = now - t, now_cpu - c
        return now, now_cpu

    t, c = start, start_cpu
    raw_events, raw_items = read(events_csv, items_csv)
    n_read = len(raw_events)
    t, c = lap("read", t, c)
    events, items, dropped = clean(raw_events, raw_items)
    del raw_events
    t, c = lap("clean", t, c)
    events, per_user = sequences(events)
    t, c = lap("sequences", t, c)
    qa, texts, eligible = build_userqa(events, items, seed)
    lap("userqa", t, c)
    wall["total"], cpu["total"] = time.perf_counter() - start, time.process_time() - start_cpu
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "counts": {
            "events_read": n_read,
            "events_kept": len(events),
            "dropped": dropped,
            "users_with_sequences": len(per_user),
            "eligible_users": eligible,
            "qa_rows": len(qa),
            "texts": len(texts),
            "qa_rows_per_task": {str(k): int(v) for k, v in qa["task"].value_counts().sort_index().items()},
        },
    }
