"""The frozen LLM side: loading, freezing and LoRA (load.py), what an embedder records of its LLM (record.py),
chat prompts with a soft-prompt slot (prompt.py), splicing soft vectors into ``inputs_embeds`` with masks,
positions and labels (soft_prompt.py), KV-cache plumbing (cache.py) and option scoring by likelihood
(scoring.py)."""
