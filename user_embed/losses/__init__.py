"""Training losses: autoregressive answer loss (qa.py), user↔text InfoNCE (contrastive.py) and the
soft-prompt ↔ option-embedding alignment (option_alignment.py)."""

from user_embed.losses.contrastive import ContrastiveLoss
from user_embed.losses.option_alignment import option_alignment_loss
from user_embed.losses.qa import answer_loss

__all__ = ["ContrastiveLoss", "answer_loss", "option_alignment_loss"]
