"""UserEmbedModule end to end on the tiny Llama: gradients reach the encoders, never the frozen LLM,
and a tiny model learns a per-user fact that only the user embedding carries.

The data: every user watches movies of one genre; every question is the same text with the
same four options in the same order, so the question alone cannot beat chance (0.25) —
only the user's history, through the soft prompt, can tell the answer.

A random tiny LLM cannot be steered by any soft prompt (its attention is near uniform and its
logits near flat), so the LLM here is first taught, as text, to answer with the genre word
written in the user-profile slot — like a real LLM that reads a profile. It is then frozen,
and the embedder must learn to *write* that profile from the user's history alone.
"""

from __future__ import annotations

import math
import random

import lightning as L
import polars as pl
import pytest
import torch

from data_pipelines.io import write_tables
from user_embed.adapters import AdapterOutput
from user_embed.config import AdapterConfig, LLMConfig, LossConfig, OptimConfig, SourceConfig
from user_embed.llm.prompt import PromptBuilder
from user_embed.llm.soft_prompt import collate_prompts
from user_embed.losses import answer_loss
from user_embed.training.datamodule import UserDataModule
from user_embed.training.module import UserEmbedModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GENRES = ["drama", "comedy", "action", "horror"]
QUESTION = "which genre has this user watched most ? options : drama , comedy , action , horror"


def teach_profile_reading(llm_dir, out_dir, steps: int = 60, num_soft: int = 2, seed: int = 0):
    """Fine-tune the tiny LLM to answer QUESTION with the genre word written in the profile slot; save it."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(llm_dir).train()
    builder = PromptBuilder(tokenizer, system_prompt="")
    genre_ids = tokenizer.convert_tokens_to_ids(GENRES)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = random.Random(seed)
    for _ in range(steps):
        prompts = []
        for _ in range(32):
            genre = rng.randrange(4)
            prompt = builder.build(QUESTION, GENRES[genre], num_soft=num_soft)
            prompt.ids[prompt.soft_start: prompt.soft_start + num_soft] = [genre_ids[genre]] * num_soft
            prompts.append(prompt)
        batch = collate_prompts(prompts, tokenizer.pad_token_id, "left")
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits
        loss = answer_loss(logits, batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2, f"the tiny LLM did not learn to read the profile slot (loss {loss.item():.3f})"
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def reading_llm_dir(tiny_llm_dir, tmp_path_factory):
    return teach_profile_reading(tiny_llm_dir, tmp_path_factory.mktemp("reading-llm"))


def write_genre_data(folder, n_users: int = 64, events: int = 8, seed: int = 0):
    """Users u0… watch ``events`` movies of genre u % 4; train on 3/4 of the users, test on the rest."""
    rng = random.Random(seed)
    items = pl.DataFrame({"item_id": [f"i{i}" for i in range(16)], "title": [f"movie {i}" for i in range(16)],
                          "categories": [[GENRES[i % 4]] for i in range(16)]})
    event_rows, users, qa = [], [], []
    for u in range(n_users):
        fav = GENRES[u % 4]
        picks = [i for i in range(16) if GENRES[i % 4] == fav]
        for t in range(events):
            event_rows.append((f"u{u}", 1_000_000 + 3600 * t, "rating", f"i{rng.choice(picks)}",
                               float(rng.randint(1, 5)), None))
        users.append((f"u{u}", rng.randint(18, 60), rng.choice("MF")))  # profile carries nothing about the genre
        split = "test" if u >= n_users * 3 // 4 else "train"
        qa.append((f"u{u}", QUESTION, fav, list(GENRES), "top_genre", "interest_perception",
                   1_000_000 + 3600 * events, split))
    tables = {
        "events": pl.DataFrame(event_rows, schema=["user_id", "timestamp", "source", "item_id", "value", "text"],
                               orient="row", schema_overrides={"text": pl.Utf8}),
        "items": items,
        "users": pl.DataFrame(users, schema=["user_id", "age", "gender"], orient="row"),
        "qa": pl.DataFrame(qa, schema=["user_id", "question", "answer", "options", "task", "family", "cutoff",
                                       "split"], orient="row"),
    }
    return write_tables(folder, tables, {"genre": True})


def make_module(llm_dir, adapter_kind: str = "resampler", lr: float = 1e-2, named: int = 0,
                pointer: bool = False) -> UserEmbedModule:
    return UserEmbedModule(
        sources=[SourceConfig(kind="sequence", name="ratings", dim=32, heads=2, layers=1, max_len=8, dropout=0.0),
                 SourceConfig(kind="tabular", name="profile", dim=16, heads=2, dropout=0.0)],
        adapter=AdapterConfig(kind=adapter_kind, num_tokens=2, dim=32, layers=1, heads=2, user_dim=16,
                              named_categories=named, category_pointer=pointer),
        llm=LLMConfig(name_or_path=str(llm_dir)), loss=LossConfig(contrastive_weight=0.0),
        optim=OptimConfig(lr=lr, warmup_steps=5))


def make_data(folder) -> UserDataModule:
    return UserDataModule(str(write_genre_data(folder)), batch_size=16, eval_batch_size=16, max_history=8,
                          item_text_vectors=False, contrastive_texts=False)


def accuracy(module: UserEmbedModule, loader, soft: str = "trained") -> float:
    """Multiple-choice accuracy; ``soft``: trained | zero (soft prompt zeroed) | shuffled (other users' prompts)."""
    original = module.embedder.forward

    def replaced(inputs, question=None):
        out = original(inputs, question)
        prompt = out.soft_prompt
        if soft == "zero":
            prompt = torch.zeros_like(prompt)
        elif soft == "shuffled":
            prompt = prompt.roll(1, 0)  # neighbour's prompt: users alternate genres, so it is another genre
        return AdapterOutput(prompt, out.user_vector)

    module.embedder.forward = replaced
    try:
        module.eval()
        right = total = 0
        for batch in loader:
            predictions, _ = module.model.answer_choices(batch)
            right += sum(p == ex.answer for p, ex in zip(predictions, batch.examples))
            total += len(batch)
        return right / total
    finally:
        del module.embedder.forward


def test_gradients_reach_encoders_and_adapter_but_not_the_llm(tiny_llm_dir, tmp_path):
    data = make_data(tmp_path / "data")
    data.setup()
    module = make_module(tiny_llm_dir).build(data.spec)
    module.train()
    assert not module.model.llm.training  # the frozen LLM never runs dropout, even in train mode
    batch = next(iter(data.train_dataloader()))
    losses = module.losses(batch)
    assert set(losses) == {"qa_loss", "loss"} and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    for name, parameter in module.embedder.named_parameters():
        if name.startswith("adapter.user_head"):
            assert parameter.grad is None  # only the contrastive loss (off here) trains the pooled user vector
            continue
        assert parameter.grad is not None, name
    assert module.embedder.encoders["ratings"].embed.item.weight.grad.abs().sum() > 0
    assert module.embedder.adapter.question_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in module.model.llm.parameters())
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("llm.") for n in trainable)


def test_named_category_tokens_start_from_the_llms_own_name_embeddings(tiny_llm_dir, tmp_path):
    data = make_data(tmp_path / "data")
    data.setup()
    module = make_module(tiny_llm_dir, named=3, pointer=True).build(data.spec)
    embedding = module.model.llm.get_input_embeddings().weight
    for row, name in enumerate(data.spec.categories):
        ids = module.model.tokenizer(name, add_special_tokens=False)["input_ids"]
        torch.testing.assert_close(module.embedder.named_categories.names[row], embedding[ids].mean(0))
    torch.testing.assert_close(module.embedder.category_pointer.names, module.embedder.named_categories.names)
    assert module.embedder.num_tokens == 2 + 3
    module.train()
    batch = next(iter(data.train_dataloader()))
    prompt = module.model.prompt_batch(batch.examples, with_answers=True)
    assert int(prompt.soft_mask[0].sum()) == 5  # K adapter tokens + 3 named tokens in the soft slot
    module.losses(batch)["loss"].backward()
    assert module.embedder.named_categories.shift[0].weight.grad.abs().sum() > 0
    assert module.embedder.category_pointer.stats[0].weight.grad.abs().sum() > 0
    assert module.embedder.adapter.pointer_query.weight.grad.abs().sum() > 0
    assert module.embedder.named_categories.names.grad is None  # the names stay the LLM's


def test_tiny_model_learns_a_fact_only_the_embedding_carries(reading_llm_dir, tmp_path):
    torch.manual_seed(0)
    data = make_data(tmp_path / "data")
    module = make_module(reading_llm_dir, adapter_kind="mlp")  # the resampler learns too, but needs ~3x the steps
    module.export_dir = str(tmp_path / "embedder")  # on_fit_end exports here, never into the working directory
    trainer = L.Trainer(max_steps=120, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=str(tmp_path))
    data.setup()
    module.build(data.spec)
    before_llm = {k: v.clone() for k, v in module.model.llm.state_dict().items()}
    before_embedder = {k: v.clone() for k, v in module.embedder.state_dict().items()}
    chance_train = accuracy(module, data.train_dataloader())
    trainer.fit(module, datamodule=data)

    train_acc = accuracy(module, data.train_dataloader())
    test_acc = accuracy(module, data.test_dataloader())
    zero_acc = accuracy(module, data.test_dataloader(), soft="zero")
    shuffled_acc = accuracy(module, data.test_dataloader(), soft="shuffled")
    print(f"before {chance_train:.2f}  train {train_acc:.2f}  test {test_acc:.2f}  "
          f"zeroed {zero_acc:.2f}  shuffled {shuffled_acc:.2f}")
    assert train_acc >= 0.75 and test_acc >= 0.75  # chance is 0.25
    assert zero_acc <= 0.5 and shuffled_acc <= 0.4  # without the user's own prompt the fact is gone
    # the encoders trained; the frozen LLM did not move at all
    after_embedder = module.embedder.state_dict()
    item_table = "encoders.ratings.embed.item.weight"
    assert not torch.equal(before_embedder[item_table], after_embedder[item_table])
    assert not torch.equal(before_embedder["adapter.to_llm.weight"], after_embedder["adapter.to_llm.weight"])
    after_llm = module.model.llm.state_dict()
    assert all(torch.equal(before_llm[k], after_llm[k]) for k in before_llm)
    assert (tmp_path / "embedder" / "model.safetensors").is_file()


def test_alignment_phase_trains_without_the_llm_then_joint_steps_follow(reading_llm_dir, tmp_path):
    """Steps in the alignment phase never run the LLM, yet teach the embedder to point at the answer among the
    options in the LLM's word space; the joint steps that follow run the LLM with the AR loss."""
    torch.manual_seed(0)
    data = make_data(tmp_path / "data")
    module = make_module(reading_llm_dir, adapter_kind="mlp", lr=3e-3)
    module.optim_config = OptimConfig(lr=3e-3, warmup_steps=5, alignment_steps=60)
    module.export_dir = str(tmp_path / "embedder")
    data.setup()
    module.build(data.spec)
    llm_calls = []
    original_forward = module.model.llm.forward
    module.model.llm.forward = lambda *a, **k: llm_calls.append(module.global_step) or original_forward(*a, **k)
    logged: list[set[str]] = []
    aligned_after_phase = []
    step_losses = module.losses

    def losses(batch, frozen_prefix=None, alignment_only=False):
        if len(logged) == 60:  # the first joint step: how well does the embedder point at the answer now?
            with torch.no_grad():
                test = next(iter(data.test_dataloader()))
                soft = module.model.embedder_output(test, module.model.prompt_batch(test.examples, with_answers=False))
                aligned_after_phase.append(module.model.option_alignment(test.examples, soft.soft_prompt)[1].item())
        out = step_losses(batch, frozen_prefix, alignment_only)
        logged.append(set(out))
        return out

    module.losses = losses
    trainer = L.Trainer(max_steps=64, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=data)
    assert min(llm_calls) == 60  # the LLM first ran in the first joint step
    assert all(keys == {"option_alignment_loss", "option_alignment_accuracy", "loss"} for keys in logged[:60])
    assert all(keys == {"qa_loss", "loss"} for keys in logged[60:]) and len(logged) == 64
    assert aligned_after_phase[0] >= 0.9  # test users, chance 0.25


def test_learning_rate_restarts_its_warmup_and_decay_for_the_joint_phase():
    from user_embed.training.schedule import learning_rate_factor

    optim = OptimConfig(lr=1e-2, warmup_steps=2, min_lr_ratio=0.1, alignment_steps=10, alignment_lr=1e-3)
    factors = [learning_rate_factor(step, 30, optim) for step in range(30)]
    assert factors[0] == pytest.approx(0.1 / 3) and factors[2] == pytest.approx(0.1)  # warmup to alignment_lr
    assert factors[9] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8))))
    assert factors[10] == pytest.approx(1 / 3) and factors[12] == pytest.approx(1.0)  # the joint phase's warmup
    assert factors[29] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 17 / 18)))
    plain = OptimConfig(lr=1e-2, warmup_steps=2)
    assert learning_rate_factor(2, 30, plain) == 1.0 and learning_rate_factor(30, 30, plain) == pytest.approx(0.1)


def test_the_system_prompt_is_recorded_with_the_llm(tiny_llm_dir):
    from user_embed.llm.load import load_llm

    assert load_llm(LLMConfig(name_or_path=str(tiny_llm_dir), system_prompt="You rate movies.")
                    ).record.system_prompt == "You rate movies."
    assert load_llm(LLMConfig(name_or_path=str(tiny_llm_dir))).record.system_prompt == ""


def sequence_module(data: UserDataModule, llm: LLMConfig) -> UserEmbedModule:
    """A one-source (rating sequence) module on the genre data with the given LLM settings, built."""
    torch.manual_seed(0)
    return UserEmbedModule(
        sources=[SourceConfig(kind="sequence", name="ratings", dim=32, heads=2, layers=1, max_len=8, dropout=0.0)],
        adapter=AdapterConfig(kind="resampler", num_tokens=2, dim=32, layers=1, heads=2, user_dim=16),
        llm=llm, loss=LossConfig(contrastive_weight=0.0)).build(data.spec)


def test_lora_weights_travel_with_the_exported_embedder(tiny_llm_dir, tmp_path):
    data = make_data(tmp_path / "data")
    data.setup()
    module = sequence_module(data, LLMConfig(name_or_path=str(tiny_llm_dir), lora=True, lora_r=4, lora_dropout=0.0))
    with torch.no_grad():  # as if trained: LoRA's B matrices start at zero, which would hide a lost adapter
        for name, parameter in module.model.llm.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    module.eval()
    batch = next(iter(data.test_dataloader()))
    before = module.model.answer_choices(batch)[0]
    prompt = module.model.prompt_batch(batch.examples, with_answers=True)
    logits = module.model.llm(inputs_embeds=module.model.inputs_embeds(batch, prompt)[0], attention_mask=prompt.attention_mask,
                        position_ids=prompt.position_ids).logits
    path = module.export(tmp_path / "embedder")
    assert (path / "lora.safetensors").is_file() and "LoRA on the LLM: r = 4" in (path / "README.md").read_text()

    from user_embed.embedder import UserEmbedder

    loaded = UserEmbedder.from_pretrained(path)
    again = UserEmbedModule(loaded.source_configs, loaded.adapter_config, LLMConfig(name_or_path=str(tiny_llm_dir)))
    again.build(loaded.spec, embedder=loaded).eval()
    assert again.model.trains_llm and again.embedder.lora["r"] == 4
    relogits = again.model.llm(inputs_embeds=again.model.inputs_embeds(batch, prompt)[0], attention_mask=prompt.attention_mask,
                         position_ids=prompt.position_ids).logits
    torch.testing.assert_close(relogits, logits)
    assert again.model.answer_choices(batch)[0] == before
    (path / "lora.safetensors").write_bytes(b"not safetensors")
    from user_embed.errors import CheckpointError

    with pytest.raises(CheckpointError, match="LoRA"):
        UserEmbedder.from_pretrained(path)


@pytest.mark.parametrize("position", ["after", "before"])
def test_frozen_prefix_training_gives_the_same_loss_and_gradients(tiny_llm_dir, tmp_path, position):
    data = make_data(tmp_path / "data")
    data.setup()
    module = sequence_module(data, LLMConfig(name_or_path=str(tiny_llm_dir), soft_position=position))
    module.train()
    batch = next(iter(data.train_dataloader()))
    prompt = module.model.prompt_batch(batch.examples, with_answers=True)
    soft_at = int(prompt.soft_mask[0].nonzero()[0])
    question_at = int((prompt.input_ids[0] == prompt.question_ids[0, 0]).nonzero()[0])
    assert (soft_at > question_at) == (position == "after")  # the slot follows the question only with "after"
    grads = []
    for frozen in (False, True):
        module.zero_grad()
        loss = module.losses(batch, frozen_prefix=frozen)["loss"]
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in module.embedder.named_parameters()
                                      if p.grad is not None}))
    (full, full_grads), (split, split_grads) = grads
    torch.testing.assert_close(split, full, atol=1e-5, rtol=1e-5)
    assert full_grads.keys() == split_grads.keys() and full_grads
    for name in full_grads:
        torch.testing.assert_close(split_grads[name], full_grads[name], atol=1e-5, rtol=1e-4)
    assert module.embedder.llm_record.soft_position == position
