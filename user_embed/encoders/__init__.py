"""Source encoders, one kind per file, built by name from a :class:`~user_embed.config.SourceConfig`."""

from user_embed.encoders.base import EncoderOutput, SourceEncoder, SourceInputs
from user_embed.encoders.registry import encoder_reads, get_encoder_builder, list_encoders, register_encoder

__all__ = ["EncoderOutput", "SourceEncoder", "SourceInputs", "build_encoder", "encoder_reads", "list_encoders",
           "register_encoder"]


def build_encoder(config, spec) -> SourceEncoder:
    """Build the encoder named by ``config.kind`` for data described by ``spec`` (a DataSpec)."""
    return get_encoder_builder(config.kind).from_config(config, spec)
