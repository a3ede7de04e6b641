"""One module per `user-embed` subcommand; each exposes ``main(argv, command) -> int``."""
