"""The frozen LLM side: loading/freezing (load.py), chat prompts with a soft-prompt slot (prompt.py),
and splicing soft vectors into ``inputs_embeds`` with masks, positions and labels (soft_prompt.py)."""
