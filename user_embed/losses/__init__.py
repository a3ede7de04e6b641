"""Training losses: autoregressive answer loss (qa.py) and user↔text InfoNCE (contrastive.py)."""

from user_embed.losses.contrastive import ContrastiveLoss
from user_embed.losses.qa import answer_loss

__all__ = ["ContrastiveLoss", "answer_loss"]
