"""The kinds of output the model-side commands write (see :mod:`data_pipelines.outputs` for the rules).

Each kind names the command that writes it and how an earlier output of it is recognised: folders by
their marker file (or, written before markers existed, by their file names), single files by content
(a parquet schema, the keys of the first JSON line). ``prepare``'s kinds live in ``data_pipelines``.
"""

from __future__ import annotations

from data_pipelines.outputs import OutputKind, jsonl_with_keys, parquet_with_columns

EMBEDDER = OutputKind("embedder", "user-embed fit", signature=("config.json", "model.safetensors"),
                      members=("config.json", "model.safetensors", "lora.safetensors", "README.md"))
EVALUATION = OutputKind("evaluation", "user-embed evaluate", signature=("metrics.json",),
                        members=("*.json", "*.jsonl", "*.md", "*.png"))  # metrics, predictions, report, plots
ENCODER = OutputKind("encoder", "user-embed pretrain", signature=("encoder.safetensors", "config.json"),
                     members=("encoder.safetensors", "head.safetensors", "config.json", "README.md", "metrics.json"))
EMBEDDINGS = OutputKind("embeddings", "user-embed embed", folder=False,
                        recognize=parquet_with_columns("user_id", "embedding"))
ANSWERS = OutputKind("answers", "user-embed generate", folder=False,
                     recognize=jsonl_with_keys("row", "user_id", "answer", "error"))
