"""InfoNCE against values computed by hand, same-user masking, temperature clamp; the AR loss's masking.

The hand computations use plain ``math`` on a 3×3 example so they do not share code with
the implementation under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from user_embed.config import LossConfig
from user_embed.errors import ConfigError
from user_embed.losses import ContrastiveLoss
from user_embed.losses.contrastive import gather_with_grad, info_nce

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# unit vectors: user i's text is t_i; t_1 and t_2 are swapped w.r.t. a perfect match to make it non-trivial
USERS = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
TEXTS = [[0.8, 0.6], [0.6, 0.8], [0.0, 1.0]]
SCALE = 2.0


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _hand_info_nce(users, texts, scale, user_ids) -> float:
    """0.5 · (mean_i CE(row i) + mean_j CE(column j)); another pair of the same user is no negative."""
    n = len(users)
    logits = [[scale * _dot(users[i], texts[j]) for j in range(n)] for i in range(n)]

    def allowed(i: int, j: int) -> bool:
        return i == j or user_ids[i] != user_ids[j]

    rows = [-logits[i][i] + math.log(sum(math.exp(logits[i][j]) for j in range(n) if allowed(i, j)))
            for i in range(n)]
    cols = [-logits[j][j] + math.log(sum(math.exp(logits[i][j]) for i in range(n) if allowed(i, j)))
            for j in range(n)]
    return 0.5 * (sum(rows) / n + sum(cols) / n)


def test_info_nce_equals_hand_computed_value():
    # written out for the first row so the number is checkable by eye:
    # logits row 0 = 2·[0.8, 0.6, 0.0] = [1.6, 1.2, 0.0]; CE = -1.6 + log(e^1.6 + e^1.2 + e^0)
    row0 = -1.6 + math.log(math.exp(1.6) + math.exp(1.2) + 1.0)
    assert row0 == pytest.approx(0.6271, abs=1e-4)
    expected = _hand_info_nce(USERS, TEXTS, SCALE, [0, 1, 2])
    got = info_nce(torch.tensor(USERS), torch.tensor(TEXTS), torch.tensor([0, 1, 2]), torch.tensor(SCALE))
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1.0646, abs=1e-3)  # the 3×3 value, fixed so a change of formula shows


def test_info_nce_masks_other_pairs_of_the_same_user():
    ids = [7, 7, 9]  # rows 0 and 1 are two questions of the same user: not negatives of each other
    expected = _hand_info_nce(USERS, TEXTS, SCALE, ids)
    got = info_nce(torch.tensor(USERS), torch.tensor(TEXTS), torch.tensor(ids), torch.tensor(SCALE))
    assert float(got) == pytest.approx(expected, rel=1e-6)
    unmasked = _hand_info_nce(USERS, TEXTS, SCALE, [0, 1, 2])
    assert abs(expected - unmasked) > 0.05  # masking changes the value: the test can tell
    assert math.isfinite(float(got))


def test_contrastive_loss_normalises_projects_and_scales():
    loss = ContrastiveLoss(user_dim=2, text_dim=2, dim=2, init_temperature=1.0 / SCALE)
    with torch.no_grad():
        for proj in (loss.user_proj, loss.text_proj):
            proj.weight.copy_(torch.eye(2))
            proj.bias.zero_()
    users = torch.tensor(USERS) * torch.tensor([[3.0], [0.5], [7.0]])  # unnormalised inputs
    texts = torch.tensor(TEXTS) * 4.0
    value = loss(users, texts, torch.tensor([0, 1, 2]))
    assert float(loss.scale().detach()) == pytest.approx(SCALE, rel=1e-6)
    assert value.item() == pytest.approx(_hand_info_nce(USERS, TEXTS, SCALE, [0, 1, 2]), rel=1e-5)
    assert loss.last_batch_size == 3  # no process group: only the local batch
    value.backward()
    assert loss.logit_scale.grad is not None and float(loss.logit_scale.grad) != 0.0
    assert loss.user_proj.weight.grad.abs().sum() > 0 and loss.text_proj.weight.grad.abs().sum() > 0


def test_temperature_is_learnable_and_clamped():
    clamped = ContrastiveLoss(4, 4, dim=4, init_temperature=0.001, max_logit_scale=100.0)
    assert float(clamped.scale().detach()) == pytest.approx(100.0, rel=1e-5)  # 1/0.001 = 1000 clamped to 100
    users, texts = torch.randn(5, 4), torch.randn(5, 4)
    clamped(users, texts, torch.arange(5)).backward()
    assert float(clamped.logit_scale.grad) == 0.0  # above the clamp the temperature gets no gradient
    free = ContrastiveLoss(4, 4, dim=4, init_temperature=0.07, max_logit_scale=100.0)
    assert float(free.scale().detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    assert free.logit_scale.requires_grad
    with pytest.raises(ConfigError, match="init_temperature"):
        LossConfig(init_temperature=0.0)
    with pytest.raises(ConfigError, match="contrastive_weight"):
        LossConfig(contrastive_weight=-1.0)


def test_perfect_alignment_beats_random_and_gather_is_identity_without_ddp():
    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    aligned = info_nce(vectors, vectors, torch.arange(8), torch.tensor(50.0))
    shuffled = info_nce(vectors, vectors[torch.randperm(8)], torch.arange(8), torch.tensor(50.0))
    assert float(aligned) < 0.05 < float(shuffled)
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


def test_option_alignment_loss_equals_hand_computed_value():
    """Two questions, K = 2 soft tokens, 2-D embeddings; question 2 has only two real options (third padded)."""
    from user_embed.losses import option_alignment_loss

    soft = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[3.0, 4.0], [-1.0, 0.0]]])  # (B=2, K=2, d=2)
    options = torch.tensor([[[2.0, 0.0], [0.6, 0.8], [0.0, -1.0]], [[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    answers = torch.tensor([1, 0])
    scale = 3.0

    def cos(a, b):
        return _dot(a, b) / math.sqrt(_dot(a, a) * _dot(b, b))

    def hand_ce(tokens, opts, answer):
        scores = [scale * max(cos(t, o) for t in tokens) for o in opts]
        return -scores[answer] + math.log(sum(math.exp(s) for s in scores))

    q1 = hand_ce([[1.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [0.6, 0.8], [0.0, -1.0]], 1)
    q2 = hand_ce([[3.0, 4.0], [-1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], 0)
    loss, accuracy = option_alignment_loss(soft, options, mask, answers, scale)
    assert loss.item() == pytest.approx((q1 + q2) / 2, rel=1e-5)
    # question 1: option 0 (cos 1) beats the answer (cos 0.8); question 2: option 1 (cos 0.8) beats the answer (0.6)
    assert accuracy.item() == 0.0


def test_option_alignment_settings_are_validated():
    with pytest.raises(ConfigError, match="option_alignment_weight"):
        LossConfig(option_alignment_weight=-1.0)
    with pytest.raises(ConfigError, match="option_alignment_scale"):
        LossConfig(option_alignment_scale=0.0)
