"""UserEmbedder = source encoders + adapter; saves itself as config.json + model.safetensors + README.md.

The frozen LLM is never saved here: only its id/path, revision, width and embedding scale are
recorded, and loading checks them against the LLM you pair the embedder with.

Saving refuses weights that hold NaN or infinity (a broken embedder is never exported) and writes a
safe output (:mod:`data_pipelines.outputs`: a previous embedder is replaced, other files are not).
The embedder also carries the user↔text contrastive space its training learned (``text_space``: the
two projections of :class:`user_embed.losses.ContrastiveLoss`, saved in ``model.safetensors`` and described
by the config's ``text_space``) and whether its pooled-vector head was trained (``user_head_trained``:
false when ``loss.contrastive_weight`` was 0 — that head then is its random initialisation).

Loading validates ``config.json`` field by field (:mod:`user_embed.embedder_config`), builds the model
on the ``meta`` device first and compares its shapes with the safetensors header, so nothing is
allocated for a config that does not match its weights, and refuses non-finite weights by name.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from data_pipelines.outputs import output_directory
from data_pipelines.readers import read_json
from user_embed.adapters import AdapterOutput, build_adapter
from user_embed.config import AdapterConfig, SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.embedder_config import validate_embedder_config
from user_embed.encoders import SourceInputs, build_encoder, encoder_reads
from user_embed.errors import CheckpointError, ConfigError, UserError
from user_embed.finite import non_finite_tensor
from user_embed.llm.record import LLMRecord
from user_embed.losses.contrastive import ContrastiveLoss
from user_embed.named_categories import CategoryMentions, CategoryPointerKeys, NamedCategoryTokens
from user_embed.output_kinds import EMBEDDER

if TYPE_CHECKING:
    from user_embed.store import UserStore

CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
LORA_NAME = "lora.safetensors"  # LoRA weights of the LLM, when the embedder was trained with llm.lora
FORMAT_VERSION = 1
VECTOR_KINDS = ("head", "fused")  # embed(vector=…): the trained user head's output, or the adapter's pooled features


class UserEmbedder(nn.Module):
    """Maps users' histories to soft prompts (B, K, d_llm) and pooled user vectors (B, user_dim)."""

    def __init__(self, sources: list[SourceConfig], adapter: AdapterConfig, spec: DataSpec, llm: LLMRecord,
                 text_space: dict | None = None):
        """text_space: {"text_encoder", "text_dim", "dim"} of a trained contrastive space (None: none)."""
        super().__init__()
        self.source_configs = sources
        self.adapter_config = adapter
        self.spec = spec
        self.llm_record = llm  # the LLM it is trained for (recorded, never copied) and its prompt format
        self.metrics: dict = {}
        self.lora: dict | None = None  # LoRA settings (r, alpha, dropout, target_modules) when trained with LoRA
        self.lora_state: dict[str, torch.Tensor] = {}  # the LLM's trained LoRA weights (peft names)
        self.user_head_trained: bool | None = None  # None: not recorded (an embedder saved before it was)
        self.text_space_config = dict(text_space) if text_space else None
        self.text_space: ContrastiveLoss | None = None  # user↔text projections (user_dim → dim ← text_dim)
        if text_space:
            self.text_space = ContrastiveLoss(adapter.user_dim, int(text_space["text_dim"]), int(text_space["dim"]))
        self.encoders = nn.ModuleDict({s.name: build_encoder(s, spec) for s in sources})
        dims = {name: enc.dim for name, enc in self.encoders.items()}
        self.adapter = build_adapter(adapter, dims, llm.hidden_size, llm.embed_rms)
        self.named_categories: NamedCategoryTokens | None = None
        self.category_pointer: CategoryPointerKeys | None = None
        if (adapter.named_categories or adapter.category_pointer) and spec.num_categories < 2:
            raise ConfigError("adapter.named_categories and adapter.category_pointer need item categories; "
                              "the items table has none")
        if adapter.named_categories:
            self.named_categories = NamedCategoryTokens(spec.num_categories, llm.hidden_size, llm.embed_rms,
                                                        adapter.named_categories, self.max_len)
        if adapter.category_pointer:
            self.category_pointer = CategoryPointerKeys(spec.num_categories, llm.hidden_size, self.max_len,
                                                        adapter.dim)
            self.mentions = CategoryMentions(spec.categories)

    @property
    def num_tokens(self) -> int:
        """Soft-prompt length: the adapter's K tokens plus any named category tokens."""
        named = self.named_categories.top if self.named_categories is not None else 0
        return self.adapter_config.num_tokens + named

    @property
    def max_len(self) -> int:
        """Longest history any source reads (sources whose encoder does not read ``events``, e.g. the profile-only
        ``tabular``, do not count)."""
        return max([s.max_len for s in self.source_configs if "events" in encoder_reads(s.kind)] or [1])

    def forward(self, inputs: SourceInputs, question: torch.Tensor | None = None,
                question_tokens: torch.Tensor | None = None, question_mask: torch.Tensor | None = None,
                question_texts: list[str] | None = None, encoded: dict | None = None) -> AdapterOutput:
        """inputs: the batch's histories/profiles; question: (B, d_llm) mean question embedding or None;
        question_tokens: (B, Tq, d_llm) question token embeddings with mask (B, Tq) (``question_tokens`` adapters);
        question_texts: the questions as text, whose category names the category pointer reads;
        encoded: :meth:`encode` of these inputs when already computed (e.g. cached per user)."""
        pointer = None
        if self.category_pointer is not None:
            mentions = self.mentions(question_texts) if question_texts is not None else None  # (B, M)
            pointer = self.category_pointer(inputs, mentions)
        sources = encoded if encoded is not None else self._encode(inputs)
        out = self.adapter(sources, question, question_tokens, question_mask, pointer)
        if self.named_categories is not None:  # (B, K, d_llm) + (B, N, d_llm) → (B, K + N, d_llm)
            out.soft_prompt = torch.cat([out.soft_prompt, self.named_categories(inputs)], 1)
        return out

    def set_category_names(self, vectors: torch.Tensor) -> None:
        """Give the named-category parts the LLM's embeddings of the category names, (C, d_llm)."""
        for part in (self.named_categories, self.category_pointer):
            if part is not None:
                part.set_names(vectors)

    def user_vectors(self, inputs: SourceInputs, vector: str = "head") -> torch.Tensor:
        """One question-independent vector per user: the user head's output (B, user_dim), or with
        ``vector="fused"`` the adapter's pooled source features before that head (B, adapter.dim)."""
        if vector == "fused":
            return self.adapter.fuse(self._encode(inputs))[2]
        return self.adapter.user_vector(self._encode(inputs))

    def attach_text_space(self, contrastive: ContrastiveLoss, text_encoder: str) -> None:
        """Keep a trained contrastive loss's projections as this embedder's user↔text space (saved with it)."""
        self.text_space = copy.deepcopy(contrastive).float().to(next(self.parameters()).device)
        self.text_space_config = {"text_encoder": text_encoder, "text_dim": contrastive.text_proj.in_features,
                                  "dim": contrastive.user_proj.out_features}

    @torch.no_grad()
    def text_similarity(self, user_vectors: torch.Tensor, text_vectors: torch.Tensor) -> torch.Tensor:
        """Cosine similarity in the contrastive space: user vectors (N, user_dim) × text vectors (M, text_dim)
        of the space's text encoder → (N, M). CheckpointError when the embedder has no trained space."""
        if self.text_space is None:
            raise CheckpointError("this embedder has no user↔text space (it was trained with "
                                  "loss.contrastive_weight 0, or without a texts table)")
        space = self.text_space
        users = torch.nn.functional.normalize(space.user_proj(user_vectors.float()), dim=-1)  # (N, dim)
        texts = torch.nn.functional.normalize(space.text_proj(text_vectors.float()), dim=-1)  # (M, dim)
        return users @ texts.T

    @torch.no_grad()
    def embed(self, users: UserStore, user_ids: Sequence[str], cutoffs: Sequence[int | None] | None = None,
              batch_size: int = 256, vector: str = "head") -> torch.Tensor:
        """(N, user_dim) pooled, question-independent user vectors; ``cutoffs[i]`` limits user i's history.

        Needs no LLM. Users with no events (before the cutoff) get a profile-only vector. ``vector="fused"``:
        the adapter's pooled features (N, adapter.dim) instead of the user head's output — what to use when the
        head was never trained (``user_head_trained`` false; the head's output warns then)."""
        from user_embed.data.collate import Example

        if vector not in VECTOR_KINDS:
            raise UserError(f"vector must be one of {', '.join(VECTOR_KINDS)}, got {vector!r}")
        if vector == "head" and self.user_head_trained is False:
            warnings.warn(UNTRAINED_HEAD, stacklevel=2)
        user_ids = users.require(user_ids)
        if cutoffs is not None and len(cutoffs) != len(user_ids):
            raise UserError(f"cutoffs: {len(cutoffs)} given for {len(user_ids)} user ids")
        if batch_size <= 0:
            raise UserError(f"batch_size must be > 0, got {batch_size}")
        was_training = self.training
        self.eval()
        collator, device = users.collator(self.spec, self.max_len), next(self.parameters()).device
        cutoffs = list(cutoffs) if cutoffs is not None else [None] * len(user_ids)
        chunks = []
        for start in range(0, len(user_ids), batch_size):
            chunk = [Example(u, "", "", [], cutoff=c) for u, c in
                     zip(user_ids[start:start + batch_size], cutoffs[start:start + batch_size])]
            chunks.append(self.user_vectors(collator(chunk).inputs.to(device), vector).float().cpu())  # (b, d)
        self.train(was_training)
        width = self.adapter_config.user_dim if vector == "head" else self.adapter.dim
        return torch.cat(chunks) if chunks else torch.zeros(0, width)

    def encode(self, inputs: SourceInputs) -> dict:
        """The question-independent part: each source's encoder output {name: EncoderOutput (B, n_s, d_s)}."""
        return self._encode(inputs)

    def _encode(self, inputs: SourceInputs) -> dict:
        return {s.name: self.encoders[s.name](inputs.tail(s.max_len)) for s in self.source_configs}

    # ---- persistence -------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "sources": [asdict(s) for s in self.source_configs],
            "adapter": asdict(self.adapter_config),
            "llm": self.llm_record.to_json(),
            "spec": self.spec.to_json(),
            "metrics": self.metrics,
            "lora": self.lora,
            "user_head_trained": self.user_head_trained,
            "text_space": self.text_space_config,
        }

    def save_pretrained(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write config.json, model.safetensors and a model card atomically into ``directory``.

        Refused (CheckpointError) when a weight is NaN or infinite. ``directory`` may be new, empty or a
        previous embedder (replaced); a folder with other files needs ``overwrite`` (OutputError)."""
        directory = Path(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        lora = {k: v.detach().contiguous().cpu() for k, v in self.lora_state.items()} if self.lora else {}
        broken = non_finite_tensor(state) or non_finite_tensor(lora)
        if broken:
            raise CheckpointError(f"{directory}: not saved — the embedder's weights are broken ({broken})")
        with output_directory(directory, EMBEDDER, overwrite=overwrite) as tmp:
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            if self.lora:
                save_file(lora, str(tmp / LORA_NAME), metadata={"format": "pt"})
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2))
            (tmp / CARD_NAME).write_text(model_card(self.config_dict()))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "UserEmbedder":
        """Load from a folder written by ``save_pretrained`` (JSON + safetensors only, nothing unpickled)."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: not a user embedder (no such folder)")
        for path in (config_path, weights_path):
            if path.is_dir():
                raise CheckpointError(f"{path}: is a folder, so {directory} is not a user embedder "
                                      f"(needs the files {CONFIG_NAME} and {WEIGHTS_NAME})")
            if not path.is_file():
                raise CheckpointError(f"{path}: missing, so {directory} is not a user embedder "
                                      f"(needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            config = read_json(config_path, "embedder config")
            validate_embedder_config(config)
            sources = [SourceConfig(**s) for s in config["sources"]]
            adapter = AdapterConfig(**config["adapter"])
            spec = DataSpec.from_json(config["spec"])
            record = LLMRecord.from_json(config["llm"])
            text_space = config.get("text_space")
            with torch.device("meta"):  # shapes only: nothing is allocated before they match the weights file
                skeleton = cls(sources, adapter, spec, record, text_space)
        except (KeyError, TypeError, ValueError) as exc:  # UserError and the field errors are ValueErrors
            detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CheckpointError(f"{config_path}: invalid embedder config "
                                  f"({detail.removeprefix(f'{config_path}: ')})") from exc
        try:
            with safe_open(str(weights_path), framework="pt") as handle:
                saved = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        except Exception as exc:  # SafetensorError: truncated, or not safetensors at all (e.g. a pickle)
            raise CheckpointError(f"{weights_path}: not a readable safetensors file ({str(exc).splitlines()[0]}); "
                                  "weights are only loaded from safetensors") from exc
        expected = skeleton.state_dict()
        wrong_shape = [f"{k}: saved {shape}, config gives {tuple(expected[k].shape)}"
                       for k, shape in saved.items() if k in expected and shape != tuple(expected[k].shape)]
        if wrong_shape:  # load_state_dict would raise a many-line RuntimeError instead
            raise CheckpointError(f"{weights_path}: weights do not match {CONFIG_NAME} ({'; '.join(wrong_shape[:3])})")
        missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{weights_path}: weights do not match {CONFIG_NAME} "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        state = cls._load_weights(weights_path)
        model = cls(sources, adapter, spec, record, text_space)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(f"{weights_path}: weights do not match {CONFIG_NAME} "
                                  f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
        model.metrics = config.get("metrics", {})
        model.user_head_trained = config.get("user_head_trained")
        if config.get("lora"):
            lora_path = directory / LORA_NAME
            try:
                model.lora_state = load_file(str(lora_path))
            except Exception as exc:  # missing, truncated or not safetensors
                raise CheckpointError(f"{lora_path}: the embedder was trained with LoRA on its LLM, but its LoRA "
                                      f"weights cannot be read ({str(exc).splitlines()[0]})") from exc
            broken = non_finite_tensor(model.lora_state)
            if broken:
                raise CheckpointError(f"{lora_path}: broken LoRA weights ({broken}); retrain the embedder")
            model.lora = dict(config["lora"])
        return model

    @staticmethod
    def _load_weights(path: Path) -> dict[str, torch.Tensor]:
        """The safetensors file's tensors; CheckpointError naming a tensor that holds NaN or infinity."""
        try:
            state = load_file(str(path))
        except Exception as exc:  # SafetensorError: data cut short after a readable header
            raise CheckpointError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]}); "
                                  "weights are only loaded from safetensors") from exc
        broken = non_finite_tensor(state)
        if broken:
            raise CheckpointError(f"{path}: broken weights ({broken}); this embedder cannot be used — retrain it")
        return state


UNTRAINED_HEAD = ("this embedder's user head was never trained (it was fitted with loss.contrastive_weight 0), "
                  "so its output is a random projection of the pooled features; use vector='fused' "
                  "(`user-embed embed --vector fused`) or retrain with contrastive_weight > 0")


def model_card(config: dict) -> str:
    """A short generated README for a saved embedder."""
    llm = config["llm"]
    sources = ", ".join(f"`{s['name']}` ({s['kind']}, d={s['dim']})" for s in config["sources"])
    adapter = config["adapter"]
    named = f" + {adapter['named_categories']} named category tokens" if adapter.get("named_categories") else ""
    lora = f"r = {config['lora']['r']}, weights in {LORA_NAME}" if config.get("lora") else "no"
    lines = [
        "# User embedder (user_embed)",
        "",
        f"- Frozen LLM: `{llm.get('origin') or llm['name_or_path']}` (revision: {llm.get('revision') or 'n/a'}, "
        f"hidden size {llm['hidden_size']})",
        f"- Sources: {sources}",
        f"- Adapter: `{adapter['kind']}`, K = {adapter['num_tokens']} soft tokens{named}, "
        f"instruction-aware: {adapter['instruction_aware']}",
        f"- Items in vocabulary: {len(config['spec']['item_ids'])}",
        f"- LoRA on the LLM: {lora}",
        "",
        "## Evaluation",
    ]
    metrics = config.get("metrics") or {}
    if metrics:
        lines += ["```json", json.dumps(metrics, indent=2), "```"]
    else:
        lines.append("No metrics recorded (`user-embed evaluate` writes its metrics to its own --out folder).")
    lines += ["", "Load with `user_embed.PersonalizedLM.from_pretrained(path)` (with its LLM) or "
                  "`user_embed.UserEmbedder.from_pretrained(path)` (user vectors only); see the user_embed README."]
    return "\n".join(lines) + "\n"
