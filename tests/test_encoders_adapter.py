"""Source encoders (sequence, text, tabular) and the adapters: shapes, masks, padding invariance,
empty histories, the registries (and what each encoder reads), output scale and instruction awareness.

Inputs are built by hand from per-user event lists, left-padded to any length, so the same
user can be seen with more or less padding and next to different neighbours.
"""

from __future__ import annotations

import pytest
import torch

from user_embed.adapters import BaseAdapter, build_adapter, list_adapters, register_adapter
from user_embed.adapters import registry as adapter_registry
from user_embed.config import AdapterConfig, SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.encoders import SourceInputs, build_encoder, encoder_reads, list_encoders
from user_embed.encoders.base import READS
from user_embed.encoders.registry import get_encoder_builder
from user_embed.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D_LLM, RMS = 64, 0.02
TEXT_MODEL = "tiny-text"


@pytest.fixture(scope="module")
def spec() -> DataSpec:
    torch.manual_seed(0)
    vectors = torch.randn(12, 8)
    vectors[:2] = 0  # padding and unknown item rows
    return DataSpec(item_ids=[f"i{i}" for i in range(10)], categories=["a", "b", "c"], max_categories=2,
                    value_mean=3.0, value_std=1.0, profile_cat_fields={"gender": ["F", "M"]},
                    profile_num_fields={"age": [30.0, 10.0]}, text_dims={TEXT_MODEL: 8},
                    item_vectors={TEXT_MODEL: vectors})


# per-user events: (item index ≥ 2, value or None, gap bucket); profile: (gender index, age or None)
USERS = {
    "long": ([(2, 1.0, 3), (5, None, 2), (7, -0.5, 2), (3, 0.2, 1), (9, 1.5, 0)], (1, 0.5)),
    "short": ([(4, 0.3, 5), (6, -1.0, 0)], (2, None)),
    "empty": ([], (1, -1.2)),
    "empty_other": ([], (2, 1.5)),  # no events either, another profile
    "nobody": ([], (0, None)),  # no events, no profile
}
CATEGORIES = torch.tensor([[0, 0], [0, 0], [1, 0], [2, 3], [3, 0], [1, 2], [2, 0], [3, 1], [1, 0], [2, 0], [3, 0],
                           [1, 3]])


def make_inputs(names: list[str], length: int) -> SourceInputs:
    """Left-padded (right-aligned) histories of the named users, ``length`` columns."""
    batch = len(names)
    items = torch.zeros(batch, length, dtype=torch.long)
    values = torch.zeros(batch, length)
    has_value = torch.zeros(batch, length, dtype=torch.bool)
    gaps = torch.zeros(batch, length, dtype=torch.long)
    cat = torch.zeros(batch, 1, dtype=torch.long)
    num = torch.zeros(batch, 1)
    num_mask = torch.zeros(batch, 1, dtype=torch.bool)
    for row, name in enumerate(names):
        events, (gender, age) = USERS[name]
        n = len(events)
        for j, (item, value, gap) in enumerate(events):
            col = length - n + j
            items[row, col], gaps[row, col] = item, gap
            if value is not None:
                values[row, col], has_value[row, col] = value, True
        cat[row, 0] = gender
        if age is not None:
            num[row, 0], num_mask[row, 0] = age, True
    return SourceInputs(items=items, categories=CATEGORIES[items], values=values, has_value=has_value, gaps=gaps,
                        mask=items > 0, profile_cat=cat, profile_num=num, profile_num_mask=num_mask)


def make_encoder(kind: str, spec: DataSpec, **overrides):
    config = SourceConfig(kind=kind, dim=16, heads=2, layers=2, max_len=12, num_tokens=3, text_encoder=TEXT_MODEL,
                          **overrides)
    torch.manual_seed(1)
    return build_encoder(config, spec).eval()


def test_registry_lists_builtin_kinds_and_rejects_unknown(spec):
    assert {"sequence", "text", "tabular"} <= set(list_encoders())
    with pytest.raises(ConfigError, match="unknown encoder kind 'graph'.*sequence"):
        get_encoder_builder("graph")
    with pytest.raises(ConfigError, match="'graph'"):
        build_encoder(SourceConfig(kind="graph"), spec)
    with pytest.raises(ConfigError, match="divisible"):
        SourceConfig(kind="sequence", dim=10, heads=4)


def test_every_encoder_declares_what_it_reads():
    for kind in list_encoders():
        assert encoder_reads(kind) and encoder_reads(kind) <= READS, kind
    assert encoder_reads("tabular") == {"profile"}
    assert encoder_reads("text") == encoder_reads("text_events") == {"events", "item_texts"}
    assert all("events" in encoder_reads(kind) for kind in ("sequence", "category_stats"))
    with pytest.raises(ConfigError, match="unknown encoder kind 'graph'"):
        encoder_reads("graph")


@pytest.mark.parametrize("kind, tokens", [("sequence", 7), ("text", 3), ("tabular", 2), ("category_stats", 4)])
def test_output_shapes_and_masks(spec, kind, tokens):
    encoder = make_encoder(kind, spec)
    out = encoder(make_inputs(["long", "short", "empty"], 7))
    assert out.tokens.shape == (3, tokens, 16) and out.mask.shape == (3, tokens) and out.mask.dtype == torch.bool
    assert torch.isfinite(out.tokens).all()
    if kind == "sequence":  # one token per event, padding masked and zeroed
        assert out.mask.sum(1).tolist() == [5, 2, 0]
        assert (out.tokens[~out.mask] == 0).all()
    elif kind == "text":  # K pooled tokens for users with history, none for the empty one
        assert out.mask.all(1).tolist() == [True, True, False]
    elif kind == "tabular":  # one token per profile field; the short user's age is missing
        assert out.mask.tolist() == [[True, True], [True, False], [True, True]]
    else:  # a summary token + one per category, always attendable
        assert out.mask.all()


@pytest.mark.parametrize("kind", ["sequence", "text", "tabular", "category_stats"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_padding_and_neighbours_do_not_change_a_users_output(spec, kind, grad):
    encoder = make_encoder(kind, spec)
    with torch.set_grad_enabled(grad):
        alone = encoder(make_inputs(["long"], 5))  # no padding at all
        padded = encoder(make_inputs(["short", "long", "empty"], 11))  # 6 padding columns, other users around
    reference = alone.tokens[0][alone.mask[0]]
    torch.testing.assert_close(padded.tokens[1][padded.mask[1]], reference, rtol=1e-4, atol=1e-5)
    if kind == "sequence":
        assert padded.mask[1].sum() == 5 and padded.mask[1, -5:].all()


def test_sequence_encoder_reads_the_history(spec):
    encoder = make_encoder("sequence", spec)
    out = encoder(make_inputs(["long", "short"], 5))
    changed = make_inputs(["long", "short"], 5)
    changed.items[0, 0] = 8  # another item in the oldest event of the first user
    out2 = encoder(changed)
    assert not torch.allclose(out.tokens[0], out2.tokens[0])
    torch.testing.assert_close(out.tokens[1], out2.tokens[1])  # the other user is untouched


def test_category_statistics_by_hand():
    from user_embed.encoders.category_stats import category_features

    # "long": items 2,5,7,3,9 (oldest first) → categories {1}, {1,2}, {3,1}, {2,3}, {2}; values 1.0, –, -0.5, 0.2, 1.5
    feats = category_features(make_inputs(["long"], 7), 4, (1, 5))[0]  # (3 categories, F)
    expected = torch.tensor([
        # last 1, gap to top, last 5, gap to top, older half (2 events), newer half (3), mean value, seen
        [0.0, -1.0, 3 / 5, 0.0, 2 / 2, 1 / 3, (1.0 - 0.5) / 2, 1.0],
        [1.0, 0.0, 3 / 5, 0.0, 1 / 2, 2 / 3, (0.2 + 1.5) / 2, 1.0],
        [0.0, -1.0, 2 / 5, -1 / 5, 0 / 2, 2 / 3, (-0.5 + 0.2) / 2, 1.0],
    ])
    torch.testing.assert_close(feats, expected)
    empty = category_features(make_inputs(["empty"], 3), 4, (1, 5))
    assert (empty == 0).all()


def test_tail_keeps_the_most_recent_events(spec):
    inputs = make_inputs(["long", "short"], 6)
    tail = inputs.tail(3)
    assert tail.items.shape == (2, 3) and tail.categories.shape == (2, 3, 2)
    assert tail.items[0].tolist() == [7, 3, 9] and tail.items[1].tolist() == [0, 4, 6]
    assert tail.profile_cat is inputs.profile_cat
    assert inputs.tail(10).items.shape == (2, 6)


def _sources(spec: DataSpec, names: list[str], length: int = 8):
    encoders = {kind: make_encoder(kind, spec) for kind in ("sequence", "text", "tabular")}
    inputs = make_inputs(names, length)
    return {kind: encoder(inputs) for kind, encoder in encoders.items()}


def make_adapter(kind: str, num_tokens: int = 4, instruction_aware: bool = True) -> BaseAdapter:
    config = AdapterConfig(kind=kind, num_tokens=num_tokens, dim=32, layers=2, heads=2,
                           instruction_aware=instruction_aware, user_dim=24)
    torch.manual_seed(2)
    return build_adapter(config, {"sequence": 16, "text": 16, "tabular": 16}, D_LLM, RMS).eval()


@pytest.mark.parametrize("kind", ["mlp", "resampler"])
@pytest.mark.parametrize("num_tokens", [1, 8])
def test_adapter_shapes_and_llm_embedding_scale(spec, kind, num_tokens):
    adapter = make_adapter(kind, num_tokens)
    sources = _sources(spec, ["long", "short", "empty"])
    out = adapter(sources, torch.randn(3, D_LLM))
    assert out.soft_prompt.shape == (3, num_tokens, D_LLM)
    assert out.user_vector.shape == (3, 24)
    assert torch.isfinite(out.soft_prompt).all() and torch.isfinite(out.user_vector).all()
    rms = out.soft_prompt.pow(2).mean(-1).sqrt()  # (B, K): every soft token at the LLM's embedding scale
    torch.testing.assert_close(rms, torch.full_like(rms, RMS), rtol=1e-3, atol=0)
    # users differ → soft prompts differ
    assert not torch.allclose(out.soft_prompt[0], out.soft_prompt[1], atol=1e-4)


@pytest.mark.parametrize("kind", ["mlp", "resampler"])
def test_instruction_awareness(spec, kind):
    sources = _sources(spec, ["long", "short"])
    q1, q2 = torch.randn(2, D_LLM) * RMS, torch.randn(2, D_LLM) * RMS
    aware = make_adapter(kind, instruction_aware=True)
    a1, a2 = aware(sources, q1), aware(sources, q2)
    # another question, another soft prompt (well above float noise; the blind adapter below is exact)
    assert (a1.soft_prompt - a2.soft_prompt).abs().max() > 1e-4
    torch.testing.assert_close(a1.user_vector, a2.user_vector)  # the pooled user vector ignores the question
    with pytest.raises(ValueError, match="instruction-aware"):
        aware(sources, None)
    blind = make_adapter(kind, instruction_aware=False)
    b1, b2, b0 = blind(sources, q1), blind(sources, q2), blind(sources, None)
    assert torch.equal(b1.soft_prompt, b2.soft_prompt) and torch.equal(b1.soft_prompt, b0.soft_prompt)


def test_question_tokens_let_one_word_change_the_soft_prompt(spec):
    config = AdapterConfig(kind="resampler", num_tokens=4, dim=32, layers=2, heads=2, user_dim=24,
                           question_tokens=True)
    torch.manual_seed(2)
    adapter = build_adapter(config, {"sequence": 16, "text": 16, "tabular": 16}, D_LLM, RMS).eval()
    sources = _sources(spec, ["long", "short"])
    words = torch.randn(2, 5, D_LLM) * RMS  # (B, Tq, d)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    mean = (words * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    out = adapter(sources, mean, words, mask)
    other = words.clone()
    other[:, 1] = torch.randn(2, D_LLM) * RMS  # one other word, same mean vector given
    assert (adapter(sources, mean, other, mask).soft_prompt - out.soft_prompt).abs().max() > 1e-4
    padded = words.clone()
    padded[1, 3:] = 9.0  # padding positions are never read
    torch.testing.assert_close(adapter(sources, mean, padded, mask).soft_prompt[1], out.soft_prompt[1])
    with pytest.raises(ValueError, match="question tokens"):
        adapter(sources, mean)
    with pytest.raises(ConfigError, match="question_tokens"):
        AdapterConfig(kind="mlp", question_tokens=True)


def test_user_without_events_gets_a_finite_profile_only_embedding(spec):
    adapter = make_adapter("resampler")
    question = torch.randn(1, D_LLM) * RMS
    sources = _sources(spec, ["empty"])
    out = adapter(sources, question)
    assert torch.isfinite(out.soft_prompt).all() and torch.isfinite(out.user_vector).all()
    # the profile is what the embedding carries: another profile → another embedding
    out2 = adapter(_sources(spec, ["empty_other"]), question)
    assert not torch.allclose(out.soft_prompt, out2.soft_prompt, atol=1e-4)
    # no events and no profile at all: still finite (attends to padding instead of producing NaN)
    out3 = adapter(_sources(spec, ["nobody"]), question)
    assert torch.isfinite(out3.soft_prompt).all() and torch.isfinite(out3.user_vector).all()
    # gradients are finite too (a NaN here would poison training)
    adapter.train()
    loss = adapter(_sources(spec, ["empty", "long"]), torch.randn(2, D_LLM)).soft_prompt.pow(2).sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in adapter.parameters() if p.grad is not None)


def test_adapter_registry_lists_builtin_kinds_and_rejects_unknown():
    assert list_adapters() == ["mlp", "pplug", "resampler"]
    message = "unknown adapter kind 'qformer'; known: mlp, pplug, resampler"
    with pytest.raises(ConfigError, match=message):
        adapter_registry.get_adapter_builder("qformer")
    config = AdapterConfig(kind="qformer")  # the config knows no kinds; building is where it fails
    with pytest.raises(ConfigError, match=message):
        build_adapter(config, {"sequence": 16}, D_LLM, RMS)


def test_a_registered_adapter_kind_is_buildable_by_name(spec, monkeypatch):
    monkeypatch.setattr(adapter_registry, "_BUILDERS", dict(adapter_registry._BUILDERS))  # undone after the test

    @register_adapter("mean")
    class MeanAdapter(BaseAdapter):
        """The pooled user vector → one linear map to the K soft tokens."""

        kind = "mean"

        def __init__(self, source_dims, llm_dim, llm_embed_rms, num_tokens, dim, user_dim):
            super().__init__(source_dims, llm_dim, num_tokens, dim, instruction_aware=False)
            self.to_llm = torch.nn.Linear(dim, num_tokens * llm_dim)
            self._build_output(llm_embed_rms, user_dim)

        @classmethod
        def from_config(cls, config, source_dims, llm_dim, llm_embed_rms):
            return cls(source_dims, llm_dim, llm_embed_rms, config.num_tokens, config.dim, config.user_dim)

        def soft_prompt(self, tokens, mask, pooled, cond, question_tokens, question_mask, pointer):
            return self.scale_output(self.to_llm(pooled).view(-1, self.num_tokens, self.llm_dim))

    assert "mean" in list_adapters()
    config = AdapterConfig(kind="mean", num_tokens=3, dim=32, heads=2, user_dim=24)
    adapter = build_adapter(config, {"sequence": 16, "text": 16, "tabular": 16}, D_LLM, RMS).eval()
    assert isinstance(adapter, MeanAdapter)
    out = adapter(_sources(spec, ["long", "short"]))
    assert out.soft_prompt.shape == (2, 3, D_LLM) and out.user_vector.shape == (2, 24)
    rms = out.soft_prompt.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, RMS), rtol=1e-3, atol=0)
    with pytest.raises(ValueError, match="registered twice"):
        register_adapter("mean")(type("Other", (MeanAdapter,), {}))


BLOCK = ["norm_q.weight", "norm_q.bias", "norm_kv.weight", "norm_kv.bias", "cross.in_proj_weight",
         "cross.in_proj_bias", "cross.out_proj.weight", "cross.out_proj.bias", "norm_self.weight", "norm_self.bias",
         "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
         "norm_mlp.weight", "norm_mlp.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
SOURCE_PROJ = ["source_proj.seq.weight", "source_proj.seq.bias", "source_proj.prof.weight", "source_proj.prof.bias"]
QUESTION_PROJ = ["question_proj.weight", "question_proj.bias"]
USER_HEAD = ["user_head.0.weight", "user_head.0.bias", "user_head.1.weight", "user_head.1.bias"]


@pytest.mark.parametrize("overrides, expected", [
    (dict(kind="mlp"), ["source_type", "out_scale", *SOURCE_PROJ, *QUESTION_PROJ, "mlp.0.weight", "mlp.0.bias",
                        "mlp.3.weight", "mlp.3.bias", "to_llm.weight", "to_llm.bias", *USER_HEAD]),
    (dict(kind="pplug", num_tokens=2), ["source_type", "instruction", "out_scale", *SOURCE_PROJ, *QUESTION_PROJ,
                                        "to_llm.0.weight", "to_llm.0.bias", "to_llm.2.weight", "to_llm.2.bias",
                                        *USER_HEAD]),
    (dict(kind="resampler", layers=2, question_tokens=True, category_pointer=True),
     ["source_type", "question_type", "queries", "pointer_gate", "mention_type", "out_scale", *SOURCE_PROJ,
      *QUESTION_PROJ, "question_token_proj.weight", "question_token_proj.bias",
      *[f"blocks.{i}.{name}" for i in range(2) for name in BLOCK], "to_llm.weight", "to_llm.bias",
      "pointer_query.weight", "pointer_query.bias", *USER_HEAD]),
    (dict(kind="resampler", layers=1, instruction_aware=False),
     ["source_type", "queries", "out_scale", *SOURCE_PROJ, *[f"blocks.0.{name}" for name in BLOCK], "to_llm.weight",
      "to_llm.bias", *USER_HEAD]),
], ids=["mlp", "pplug", "resampler_all_options", "resampler_blind"])
def test_adapter_parameter_names_and_order_are_the_checkpoint_format(overrides, expected):
    """Golden: saved embedders load by these names, and seeded builds depend on this creation order."""
    config = AdapterConfig(**{"dim": 8, "heads": 2, **overrides})
    adapter = build_adapter(config, {"seq": 4, "prof": 3}, 6, 0.1)
    assert list(adapter.state_dict()) == expected
    assert [name for name, _ in adapter.named_parameters()] == expected


def test_named_category_tokens_are_the_names_of_the_users_top_categories(spec):
    from user_embed.named_categories import NamedCategoryTokens

    torch.manual_seed(3)
    named = NamedCategoryTokens(spec.num_categories, D_LLM, RMS, top=2, max_len=12).eval()
    names = torch.randn(3, D_LLM) * RMS  # one row per category a, b, c
    named.set_names(names)
    # "long" has categories a ×3, b ×3, c ×2 (a before b on the tie); "short": items 4 ({c}), 6 ({b})
    tokens = named(make_inputs(["long", "short"], 8))  # (B, top, d)
    assert tokens.shape == (2, 2, D_LLM)
    with torch.no_grad():
        named.shift_scale.zero_()  # without the learned shift a token is exactly its name's embedding
    plain = named(make_inputs(["long", "short"], 8))
    torch.testing.assert_close(plain[0], names[[0, 1]])
    torch.testing.assert_close(plain[1], names[[1, 2]])
    assert not torch.allclose(tokens, plain)  # the shift carries the statistics
    with pytest.raises(ValueError, match="shape"):
        named.set_names(torch.zeros(4, D_LLM))
    with pytest.raises(ConfigError, match="named_categories"):
        AdapterConfig(named_categories=-1)


def test_pplug_adapter_one_question_weighted_user_token_and_one_shared_instruction_token(spec):
    config = AdapterConfig(kind="pplug", num_tokens=2, dim=32, heads=2, user_dim=24)
    torch.manual_seed(2)
    events = make_encoder("text_events", spec)
    adapter = build_adapter(config, {"text_events": events.dim}, D_LLM, RMS).eval()
    inputs = make_inputs(["long", "short", "empty"], 8)
    out = events(inputs)
    assert out.tokens.shape == (3, 8, 8) and torch.equal(out.mask, inputs.mask)
    torch.testing.assert_close(out.tokens[0, -1], spec.item_vectors[TEXT_MODEL][9])  # the frozen vector, as is
    q1, q2 = torch.randn(3, D_LLM), torch.randn(3, D_LLM)
    a, b = adapter({"text_events": out}, q1), adapter({"text_events": out}, q2)
    assert a.soft_prompt.shape == (3, 2, D_LLM) and torch.isfinite(a.soft_prompt).all()
    assert (a.soft_prompt[:2, 0] - b.soft_prompt[:2, 0]).abs().max() > 1e-4  # input-aware user token
    torch.testing.assert_close(a.soft_prompt[:, 1], a.soft_prompt[:1, 1].expand(3, -1))  # one instruction token
    rms = a.soft_prompt.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, RMS), rtol=1e-3, atol=0)
    with pytest.raises(ConfigError, match="pplug"):
        AdapterConfig(kind="pplug", num_tokens=8)


def pointer_setup(spec: DataSpec):
    """A resampler with a category pointer, its category keys over names a, b, c, and two users' inputs."""
    from user_embed.named_categories import CategoryPointerKeys

    config = AdapterConfig(kind="resampler", num_tokens=2, dim=32, layers=1, heads=2, user_dim=24,
                           category_pointer=True)
    torch.manual_seed(2)
    adapter = build_adapter(config, {"sequence": 16, "text": 16, "tabular": 16}, D_LLM, RMS).eval()
    keys = CategoryPointerKeys(spec.num_categories, D_LLM, max_len=12, dim=32).eval()
    names = torch.randn(3, D_LLM) * RMS
    keys.set_names(names)
    question = torch.randn(2, D_LLM) * RMS
    return adapter, keys, names, make_inputs(["long", "short"], 8), _sources(spec, ["long", "short"]), question


def test_category_pointer_adds_a_mix_of_category_names_picked_by_statistics(spec):
    adapter, keys, names, inputs, sources, question = pointer_setup(spec)
    pointer = keys(inputs)
    assert pointer.mentions.shape == (2, 0) and pointer.allowed().all()  # no mentions: point anywhere
    out = adapter(sources, question, pointer=pointer)
    with torch.no_grad():
        adapter.pointer_gate.zero_()
    plain = adapter(sources, question, pointer=keys(inputs))
    rms = plain.soft_prompt.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, RMS), rtol=1e-3, atol=0)  # gate 0: the plain tokens
    added = out.soft_prompt - plain.soft_prompt  # (B, K, d): a convex mix of the three names
    weights = torch.linalg.lstsq(names.T, added.reshape(-1, D_LLM).T).solution.T  # (B*K, 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4), atol=1e-4, rtol=0)
    assert (weights > -1e-4).all()
    with pytest.raises(ValueError, match="category pointer"):
        adapter(sources, question)
    with pytest.raises(ConfigError, match="category_pointer"):
        AdapterConfig(kind="mlp", category_pointer=True)


def test_category_mentions_are_whole_words_in_first_mention_order():
    from user_embed.named_categories import CategoryMentions

    mentions = CategoryMentions(["Action", "Children's", "Sci-Fi", "War", "Film-Noir"])
    found = mentions(["How many have the genre sci-fi? Options: 0, 1-2.",
                      "Options: War, Children's, Action, War.",
                      "Star Wars is an action-packed film-noir?",
                      "Nothing here."])
    assert found.tolist() == [[3, 0, 0], [4, 2, 1], [1, 5, 0], [0, 0, 0]]  # (B, most mentions)
    assert CategoryMentions([])(["Drama"]).shape == (1, 0)


def test_the_pointer_points_only_at_named_categories_and_their_keys_reach_the_resampler(spec):
    adapter, keys, names, inputs, sources, question = pointer_setup(spec)
    named = keys(inputs, torch.tensor([[2, 0], [3, 1]]))  # user 0's question names b; user 1's names c and a
    assert named.allowed().tolist() == [[False, True, False], [True, False, True]]
    with torch.no_grad():
        pointed = adapter._point(torch.randn(2, 2, 32), named)  # (B, K, d)
    torch.testing.assert_close(pointed[0], names[1].expand(2, -1) * adapter.pointer_gate)
    weights = torch.linalg.lstsq(names.T, pointed[1].T).solution.T  # (K, 3): nothing on b
    assert weights[:, 1].abs().max() < 1e-4
    # the named categories' keys are read by the resampler: another mention, another soft prompt
    other = keys(inputs, torch.tensor([[1, 0], [3, 1]]))
    a, b = adapter(sources, question, pointer=named), adapter(sources, question, pointer=other)
    assert (a.soft_prompt[0] - b.soft_prompt[0]).abs().max() > 1e-4
    torch.testing.assert_close(a.soft_prompt[1], b.soft_prompt[1])


def test_category_stats_without_item_categories_keeps_the_value_summary_token():
    from user_embed.encoders.category_stats import CategoryStatsEncoder

    torch.manual_seed(0)
    encoder = CategoryStatsEncoder(num_categories=1, dim=8, max_len=12).eval()  # index 0 only: no categories
    inputs = make_inputs(["long", "empty"], 7)
    inputs.categories = torch.zeros_like(inputs.categories)
    out = encoder(inputs)
    assert out.tokens.shape == (2, 1, 8) and out.mask.all()
    shifted = make_inputs(["long", "empty"], 7)
    shifted.categories, shifted.values = torch.zeros_like(shifted.categories), shifted.values + 1.0
    assert not torch.allclose(encoder(shifted).tokens[0], out.tokens[0])  # the summary reads the values
    with pytest.raises(ConfigError, match="num_categories must be >= 1"):
        CategoryStatsEncoder(num_categories=0)
