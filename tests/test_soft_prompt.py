"""Soft-prompt splicing, padding, position ids and answer labels on the tiny in-process Llama.

The reference for splicing: if the "soft prompt" is the LLM's own embeddings of some real
tokens, the spliced ``inputs_embeds`` must give exactly the logits of the plain prompt that
has those tokens in the soft slots.
"""

from __future__ import annotations

import pytest
import torch

from user_embed.config import LLMConfig
from user_embed.llm.load import load_llm
from user_embed.llm.prompt import PromptBuilder
from user_embed.llm.soft_prompt import (
    IGNORE_INDEX,
    collate_prompts,
    mean_question_embedding,
    positions_from_mask,
    splice_soft_prompt,
)
from user_embed.losses import answer_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTIONS = [
    "which genre is the user watched most ?",
    "how many movies ?",
    "what is the first genre this user rated high compared to earlier movies ?",
]
ANSWERS = ["drama", "3-5 movies", "comedy"]
SOFT_WORDS = [["drama", "comedy", "action"], ["red", "blue", "green"], ["yes", "no", "fact"]]


@pytest.fixture(scope="module")
def tiny(tiny_llm_dir):
    loaded = load_llm(LLMConfig(name_or_path=str(tiny_llm_dir)))
    return loaded.model, loaded.tokenizer


def _plain_ids(prompt, soft_ids: list[int]) -> list[int]:
    """The prompt's ids with the soft slot filled by real token ids."""
    ids = list(prompt.ids)
    ids[prompt.soft_start: prompt.soft_start + prompt.num_soft] = soft_ids
    return ids


def _logits(model, batch, inputs_embeds=None, input_ids=None):
    with torch.no_grad():
        return model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=batch.attention_mask,
                     position_ids=batch.position_ids).logits


def test_load_llm_freezes_and_records_info(tiny, tiny_llm_dir):
    model, _ = tiny
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    record = load_llm(LLMConfig(name_or_path=str(tiny_llm_dir))).record
    assert record.hidden_size == 64 and record.model_type == "llama"
    embed = model.get_input_embeddings().weight
    assert record.embed_rms == pytest.approx(float(embed.pow(2).mean().sqrt()), rel=1e-6)


def test_prompt_builder_places_soft_slot_inside_the_chat_template(tiny):
    _, tokenizer = tiny
    builder = PromptBuilder(tokenizer, system_prompt="")
    prompt = builder.build(QUESTIONS[0], ANSWERS[0], num_soft=3)
    tokens = tokenizer.convert_ids_to_tokens(prompt.ids)
    assert tokens[0] == "<|im_start|>"
    assert prompt.ids[prompt.soft_start: prompt.soft_start + 3] == [tokenizer.pad_token_id] * 3
    assert tokens[prompt.soft_start - 1] == "profile:"  # the slot follows the "User profile:" label
    question = tokenizer(QUESTIONS[0], add_special_tokens=False)["input_ids"]
    after = prompt.ids[prompt.soft_start + 3: prompt.soft_start + 3 + len(question)]
    assert after == question == prompt.question_ids
    # the answer comes after the generation prompt and ends with the end token
    assert prompt.ids[prompt.answer_start:] == tokenizer("drama", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]
    assert tokens[prompt.answer_start - 2: prompt.answer_start - 1] == ["<|im_start|>"]
    without = builder.build(QUESTIONS[0], ANSWERS[0])
    assert without.soft_start == -1 and len(without.ids) == len(prompt.ids) - 3 - 2  # no slot, no 'User profile:'


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_splicing_own_token_embeddings_reproduces_plain_logits(tiny, padding_side):
    model, tokenizer = tiny
    builder = PromptBuilder(tokenizer, system_prompt="")
    soft_prompts = [builder.build(q, a, num_soft=3) for q, a in zip(QUESTIONS, ANSWERS)]
    assert len({len(p.ids) for p in soft_prompts}) == 3  # mixed lengths: real padding in the batch
    soft_ids = [tokenizer.convert_tokens_to_ids(words) for words in SOFT_WORDS]
    pad = tokenizer.pad_token_id

    soft_batch = collate_prompts(soft_prompts, pad, padding_side)
    plain = [builder.build(q, a, num_soft=3) for q, a in zip(QUESTIONS, ANSWERS)]
    for prompt, ids in zip(plain, soft_ids):
        prompt.ids = _plain_ids(prompt, ids)
    plain_batch = collate_prompts(plain, pad, padding_side)
    assert torch.equal(soft_batch.attention_mask, plain_batch.attention_mask)
    assert torch.equal(soft_batch.labels, plain_batch.labels)

    embedding = model.get_input_embeddings()
    soft_vectors = embedding(torch.tensor(soft_ids))  # (B, K, d): row b's own words
    spliced = splice_soft_prompt(embedding(soft_batch.input_ids), soft_batch.soft_mask, soft_vectors)
    expected = _logits(model, plain_batch, input_ids=plain_batch.input_ids)
    got = _logits(model, soft_batch, inputs_embeds=spliced)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # a different soft prompt must change the answer logits (the check is not vacuous)
    rolled = splice_soft_prompt(embedding(soft_batch.input_ids), soft_batch.soft_mask, soft_vectors.roll(1, 0))
    assert not torch.allclose(_logits(model, soft_batch, inputs_embeds=rolled), expected, atol=1e-4)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batch_matches_each_prompt_alone(tiny, padding_side):
    """Attention mask + position ids make padding invisible: every real position's logits equal the unpadded run."""
    model, tokenizer = tiny
    builder = PromptBuilder(tokenizer, system_prompt="")
    prompts = [builder.build(q, a, num_soft=2) for q, a in zip(QUESTIONS, ANSWERS)]
    batch = collate_prompts(prompts, tokenizer.pad_token_id, padding_side)
    embedding = model.get_input_embeddings()
    soft = torch.randn(3, 2, 64) * 0.02
    logits = _logits(model, batch, inputs_embeds=splice_soft_prompt(embedding(batch.input_ids), batch.soft_mask, soft))
    for row, prompt in enumerate(prompts):
        alone = collate_prompts([prompt], tokenizer.pad_token_id, padding_side)
        assert alone.position_ids.tolist() == [list(range(len(prompt.ids)))]
        embeds = splice_soft_prompt(embedding(alone.input_ids), alone.soft_mask, soft[row: row + 1])
        reference = _logits(model, alone, inputs_embeds=embeds)[0]  # (n, V)
        real = batch.attention_mask[row].bool()
        assert torch.equal(batch.position_ids[row][real], torch.arange(len(prompt.ids)))
        torch.testing.assert_close(logits[row][real], reference, rtol=1e-4, atol=1e-5)
    if padding_side == "right":
        return  # causal attention never looks right, so right padding is invisible even without a mask
    # attending to the left padding would change the padded rows: the comparison above can fail
    embeds = splice_soft_prompt(embedding(batch.input_ids), batch.soft_mask, soft)
    with torch.no_grad():
        leaky = model(inputs_embeds=embeds, attention_mask=torch.ones_like(batch.attention_mask),
                      position_ids=batch.position_ids).logits
    shortest = min(range(3), key=lambda r: len(prompts[r].ids))
    real = batch.attention_mask[shortest].bool()
    assert not torch.allclose(leaky[shortest][real], logits[shortest][real], atol=1e-4)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_masks_positions_and_labels(tiny, padding_side):
    _, tokenizer = tiny
    builder = PromptBuilder(tokenizer, system_prompt="")
    prompts = [builder.build(q, a, num_soft=4) for q, a in zip(QUESTIONS, ANSWERS)]
    batch = collate_prompts(prompts, tokenizer.pad_token_id, padding_side)
    length = max(len(p.ids) for p in prompts)
    assert batch.input_ids.shape == batch.labels.shape == batch.soft_mask.shape == (3, length)
    for row, prompt in enumerate(prompts):
        n = len(prompt.ids)
        offset = length - n if padding_side == "left" else 0
        expected_mask = [0] * length
        expected_mask[offset: offset + n] = [1] * n
        assert batch.attention_mask[row].tolist() == expected_mask
        positions = batch.position_ids[row].tolist()
        assert positions[offset: offset + n] == list(range(n))
        assert all(p == 0 for i, p in enumerate(positions) if not expected_mask[i])
        assert batch.soft_mask[row].sum() == 4
        soft_columns = batch.soft_mask[row].nonzero().flatten().tolist()
        assert soft_columns == list(range(offset + prompt.soft_start, offset + prompt.soft_start + 4))
        # labels: only the answer tokens and the end token; everything else (template, question, soft, pad) ignored
        answer = tokenizer(ANSWERS[row], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = batch.labels[row].tolist()
        kept = [(i, t) for i, t in enumerate(labels) if t != IGNORE_INDEX]
        assert [t for _, t in kept] == answer
        assert [i for i, _ in kept] == list(range(offset + prompt.answer_start, offset + n))
        assert batch.question_ids[row][batch.question_mask[row]].tolist() == prompt.question_ids
    assert torch.equal(positions_from_mask(batch.attention_mask), batch.position_ids)
    # prompts without answers carry no labels at all
    unlabeled = collate_prompts([builder.build(q, num_soft=4) for q in QUESTIONS], tokenizer.pad_token_id, padding_side)
    assert (unlabeled.labels == IGNORE_INDEX).all()


def test_answer_loss_ignores_everything_but_answer_tokens(tiny):
    _, tokenizer = tiny
    builder = PromptBuilder(tokenizer, system_prompt="")
    batch = collate_prompts([builder.build(q, a, num_soft=2) for q, a in zip(QUESTIONS, ANSWERS)],
                            tokenizer.pad_token_id, "right")
    torch.manual_seed(0)
    logits = torch.randn(*batch.labels.shape, len(tokenizer))
    labels = batch.labels
    loss = answer_loss(logits, labels)
    # change every logit that does not predict an answer token: the loss stays the same
    predicts_answer = torch.zeros_like(labels, dtype=torch.bool)
    predicts_answer[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    noisy = torch.where(predicts_answer.unsqueeze(-1), logits, torch.randn_like(logits) * 10)
    assert answer_loss(noisy, labels) == pytest.approx(float(loss), abs=1e-6)
    # and by hand: mean over answer tokens of -log softmax at the previous position
    log_probs = torch.log_softmax(logits, -1)
    terms = [-log_probs[b, t - 1, labels[b, t]] for b, t in (labels != IGNORE_INDEX).nonzero().tolist()]
    assert float(loss) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="no answer tokens"):
        answer_loss(logits, torch.full_like(labels, IGNORE_INDEX))


def test_splice_rejects_wrong_number_of_vectors_and_question_mean(tiny):
    model, tokenizer = tiny
    builder = PromptBuilder(tokenizer, system_prompt="")
    batch = collate_prompts([builder.build(q, num_soft=2) for q in QUESTIONS], tokenizer.pad_token_id, "left")
    embedding = model.get_input_embeddings()
    embeds = embedding(batch.input_ids)
    with pytest.raises(ValueError, match="soft slots"):
        splice_soft_prompt(embeds, batch.soft_mask, torch.zeros(3, 3, 64))
    no_slot = collate_prompts([builder.build(q) for q in QUESTIONS], tokenizer.pad_token_id, "left")
    assert splice_soft_prompt(embeds, no_slot.soft_mask, torch.zeros(3, 2, 64)) is embeds
    mean = mean_question_embedding(embedding, batch.question_ids, batch.question_mask)  # (B, d)
    for row, prompt in enumerate(builder.build(q) for q in QUESTIONS):
        expected = embedding(torch.tensor(prompt.question_ids)).mean(0)
        torch.testing.assert_close(mean[row], expected)
