"""Encoder pre-training: next-item prediction over event sequences (the first of three stages).

``user-embed pretrain --config configs/pretrain_<kind>.yaml`` trains a sequence encoder with
:class:`~user_embed.pretrain.module.NextItemModule` on
:class:`~user_embed.pretrain.data.NextItemDataModule`, reports Recall@k / NDCG@k on held-out
targets and writes ``encoder.safetensors`` + ``config.json``, which a UserEmbedder source loads
with ``checkpoint: <folder>`` (``freeze: true|false``). Modules: ``data`` (windows, splits,
collate), ``heads`` (full / sampled softmax), ``metrics``, ``module`` (LightningModule),
``checkpoint`` (save, check vocabulary, load), ``loop`` (fit → test → save).
"""
