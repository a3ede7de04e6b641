"""Sequence encoder zoo: every kind's output shape, mask handling, padding invariance and causality."""

from __future__ import annotations

import math

import pytest
import torch

from user_embed.config import SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.encoders import SourceInputs, build_encoder, list_encoders
from user_embed.encoders.hstu import relative_time_buckets
from user_embed.errors import ConfigError

CAUSAL = ["sasrec", "gru4rec", "trmpp", "hstu"]
ALL_SEQUENCE = [*CAUSAL, "sequence"]
SPEC = DataSpec(item_ids=[f"i{i}" for i in range(30)], categories=["a", "b", "c", "d"], max_categories=2)


def make_inputs(lengths: list[int], width: int, seed: int = 0) -> SourceInputs:
    """Right-aligned histories of the given lengths, padded on the left to ``width``."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    mask = torch.zeros(batch, width, dtype=torch.bool)
    for row, n in enumerate(lengths):
        mask[row, width - n:] = True
    items = torch.randint(2, SPEC.num_items, (batch, width), generator=generator) * mask
    categories = torch.randint(0, SPEC.num_categories, (batch, width, 2), generator=generator) * mask[..., None]
    values = torch.randn(batch, width, generator=generator) * mask
    gaps = torch.randint(0, 20, (batch, width), generator=generator).sort(-1, descending=True).values * mask
    return SourceInputs(items=items, categories=categories, values=values, has_value=mask.clone(), gaps=gaps, mask=mask)


def row(inputs: SourceInputs, index: int, width: int) -> SourceInputs:
    """One user's history re-padded to ``width`` columns."""
    out = {}
    for name in ("items", "categories", "values", "has_value", "gaps", "mask"):
        value = getattr(inputs, name)[index:index + 1]
        real = int(inputs.mask[index].sum())
        value = value[:, value.shape[1] - real:]
        pad = torch.zeros((1, width - real, *value.shape[2:]), dtype=value.dtype)
        out[name] = torch.cat([pad, value], 1)
    return SourceInputs(**out)


def encoder(kind: str, max_len: int = 12, dim: int = 32):
    torch.manual_seed(0)
    return build_encoder(SourceConfig(kind=kind, dim=dim, layers=2, heads=2, max_len=max_len), SPEC).eval()


def test_list_encoders_names_every_sequence_kind():
    assert set(ALL_SEQUENCE) <= set(list_encoders())


@pytest.mark.parametrize("kind", ALL_SEQUENCE)
def test_output_shape_and_mask(kind):
    inputs = make_inputs([5, 12, 1, 0], width=12)
    out = encoder(kind)(inputs)
    assert out.tokens.shape == (4, 12, 32)
    assert torch.equal(out.mask, inputs.mask)
    assert torch.isfinite(out.tokens).all()
    assert (out.tokens[~inputs.mask] == 0).all()  # padding (and the empty user) gives zero tokens
    assert out.tokens[inputs.mask].abs().sum(-1).gt(0).all()


@pytest.mark.parametrize("kind", ALL_SEQUENCE)
def test_padding_does_not_change_a_users_output(kind):
    model = encoder(kind)
    inputs = make_inputs([5, 12, 3], width=12, seed=1)
    together = model(inputs).tokens  # (3, 12, d) batched with users of other lengths
    for index, n in enumerate([5, 12, 3]):
        for width in sorted({n, min(n + 4, 12), 12}):
            alone = model(row(inputs, index, width)).tokens
            torch.testing.assert_close(alone[0, width - n:], together[index, 12 - n:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", CAUSAL)
def test_causal_encoders_do_not_see_the_future(kind):
    model = encoder(kind)
    inputs = make_inputs([10, 10], width=10, seed=2)
    before = model(inputs).tokens
    changed = SourceInputs(**vars(inputs))
    changed.items = inputs.items.clone()
    changed.items[:, 7:] = (inputs.items[:, 7:] + 5) % SPEC.num_items + 2 * (inputs.items[:, 7:] + 5 >= SPEC.num_items)
    changed.values = inputs.values.clone()
    changed.values[:, 7:] += 1.0
    after = model(changed).tokens
    torch.testing.assert_close(after[:, :7], before[:, :7], atol=1e-6, rtol=0)  # earlier states untouched
    assert not torch.allclose(after[:, 7:], before[:, 7:])  # later states did change


def test_bidirectional_sequence_encoder_does_see_the_future():
    """Control for the causality test: the non-causal `sequence` encoder fails it."""
    model = encoder("sequence")
    inputs = make_inputs([10], width=10, seed=2)
    changed = SourceInputs(**vars(inputs))
    changed.items = inputs.items.clone()
    changed.items[:, -1] = 2 if int(inputs.items[0, -1]) != 2 else 3
    assert not torch.allclose(model(changed).tokens[:, :9], model(inputs).tokens[:, :9])


@pytest.mark.parametrize("kind", CAUSAL)
def test_longer_histories_keep_the_most_recent_max_len_events(kind):
    """The zoo encoders apply the `recent` truncation themselves (UserEmbedder also tails inputs)."""
    model = encoder(kind, max_len=6)
    inputs = make_inputs([10, 4], width=10, seed=3)
    out = model(inputs)
    assert out.tokens.shape[1] == 6
    torch.testing.assert_close(out.tokens, model(inputs.tail(6)).tokens)


@pytest.mark.parametrize("kind", CAUSAL)
def test_gradients_are_finite_with_empty_histories(kind):
    model = encoder(kind).train()
    out = model(make_inputs([0, 4, 12], width=12, seed=4))
    (out.tokens ** 2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_trmpp_needs_an_even_head_width():
    with pytest.raises(ConfigError, match="even"):
        build_encoder(SourceConfig(kind="trmpp", dim=30, heads=2), SPEC)


def test_hstu_relative_time_buckets_by_hand():
    gaps = torch.tensor([[5, 3, 0]])  # log2-hour buckets to the prediction time, oldest first
    hours = [2 ** 5.5 - 1, 2 ** 3.5 - 1, 0.0]  # bucket midpoints
    expected = [[math.floor(math.log2(abs(a - b) + 1)) for b in hours] for a in hours]
    assert relative_time_buckets(gaps)[0].tolist() == expected
    assert expected[0][2] == 5 and expected[1][1] == 0
