"""UserQA configuration: :class:`UserQAConfig` (how questions and user texts are built).

Its own module so that the task generators (:mod:`data_pipelines.userqa_tasks`) and the
builder (:mod:`data_pipelines.userqa`, which re-exports the class) both import it without
importing each other. :data:`TASK_NAMES` lists the tasks in their fixed order; the generators
registry (``userqa_tasks.TASKS``) is checked against it at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_pipelines.errors import ConfigError

#: UserQA task names, in the order questions are built and reported (keys of ``userqa_tasks.TASKS``).
TASK_NAMES: tuple[str, ...] = (
    "recent_category",
    "category_count",
    "next_category",
    "next_rating",
    "longterm_top_category",
    "recent_top_category",
    "interest_shift",
)


#: Task-name suffix of the open variants (no options listed) of the category questions.
OPEN_SUFFIX = "_open"


def bucket_bounds(labels: tuple[str, ...]) -> list[tuple[int, int]]:
    """``("0", "1-2")`` -> ``[(0, 0), (1, 2)]``; raises ValueError on a malformed label."""
    bounds = []
    for label in labels:
        lo, _, hi = label.partition("-")
        bounds.append((int(lo), int(hi or lo)))
    return bounds


@dataclass
class UserQAConfig:
    """How UserQA questions and user texts are built."""

    history_fraction: float = 0.8
    """Cutoff = timestamp of the event at position floor(history_fraction * n) of a user's events."""
    min_history: int = 10
    """Users with fewer events before the cutoff are skipped."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Share of users in train, val, test (user-disjoint)."""
    tasks: dict[str, int] = field(default_factory=lambda: {name: 1 for name in TASK_NAMES})
    """Task name -> at most this many distinct questions per user (0 disables the task)."""
    num_options: int = 2
    """Options per category question (2-4): the answer plus num_options - 1 distractors."""
    count_window: int = 10
    """category_count asks about the last count_window history items."""
    count_buckets: tuple[str, ...] = ("0", "1-2", "3-5", "6-10")
    """Answer labels of category_count: "a" or "a-b", contiguous from 0 to count_window."""
    recent_window: int = 20
    """recent_top_category counts over the last recent_window history items."""
    distractor_max_ratio: float = 0.5
    """Top-category distractors have at most this fraction of the top category's count."""
    min_shift: float = 0.05
    """interest_shift needs a share change (newer half minus older half) larger than this."""
    high_rating: float = 4.0
    """next_rating answer is "high" when the value is >= this, else "low"."""
    open_questions: bool = True
    """Also ask each category question in an open variant (task ``<task>_open``): the same answer, no options
    listed ("Which genre … ? Answer with one genre."), so training and evaluation cover free-text answers."""
    max_majority_share: float = 0.5
    """Per task and split, no answer may exceed this share (over-represented answers are downsampled)."""
    item_noun: str = "item"
    """Word for an item in questions and texts, e.g. "movie"."""
    item_noun_plural: str | None = None
    """Plural of item_noun (default: item_noun + "s"/"ies")."""
    category_noun: str = "category"
    """Word for a category, e.g. "genre"."""
    category_noun_plural: str | None = None
    """Plural of category_noun (default: derived)."""
    action_verb: str = "interacted with"
    """Past tense of what users do with items, e.g. "watched"."""
    value_noun: str = "rating"
    """Word for an event's value, e.g. "rating"."""
    text_top_categories: int = 5
    """How many top categories the user text lists."""
    text_recent_items: int = 5
    """How many most recent items the user text lists."""

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"UserQAConfig: {message}")

        need(0 < self.history_fraction < 1,
             f"history_fraction must be in (0, 1), got {self.history_fraction}")
        need(self.min_history >= 1, f"min_history must be >= 1, got {self.min_history}")
        self.split_fractions = tuple(float(f) for f in self.split_fractions)  # type: ignore[assignment]
        need(len(self.split_fractions) == 3 and min(self.split_fractions) >= 0
             and abs(sum(self.split_fractions) - 1) < 1e-6,
             f"split_fractions must be 3 non-negative numbers summing to 1, got {self.split_fractions}")
        unknown = sorted(set(self.tasks) - set(TASK_NAMES))
        need(not unknown, f"unknown tasks {unknown}; known: {list(TASK_NAMES)}")
        need(all(isinstance(n, int) and n >= 0 for n in self.tasks.values()),
             f"task counts must be integers >= 0, got {self.tasks}")
        need(2 <= self.num_options <= 4, f"num_options must be 2-4, got {self.num_options}")
        need(self.count_window >= 1 and self.recent_window >= 1,
             "count_window and recent_window must be >= 1")
        try:
            bounds = bucket_bounds(tuple(self.count_buckets))
        except ValueError:
            bounds = []
        contiguous = bool(bounds) and bounds[0][0] == 0 and bounds[-1][1] == self.count_window and all(
            lo <= hi for lo, hi in bounds) and all(b[0] == a[1] + 1 for a, b in zip(bounds, bounds[1:]))
        need(contiguous and 2 <= len(bounds) <= 4,
             f"count_buckets must be 2-4 labels like '0', '1-2' covering 0..{self.count_window}, "
             f"got {self.count_buckets}")
        need(0 <= self.distractor_max_ratio < 1, "distractor_max_ratio must be in [0, 1)")
        need(0 <= self.min_shift < 1, "min_shift must be in [0, 1)")
        need(0 < self.max_majority_share <= 1, "max_majority_share must be in (0, 1]")
        for name in ("item_noun", "category_noun", "action_verb", "value_noun"):
            need(bool(getattr(self, name).strip()), f"{name} must not be empty")
