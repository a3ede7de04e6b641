"""`user-embed embed --checkpoint EMBEDDER --data DIR --out users.parquet`: one vector per user.

Each user's vector is the embedder's pooled, question-independent user vector over the
user's whole history (or the history before ``--cutoff`` Unix seconds). Users with no events
(before the cutoff) get a profile-only vector (documented rule), and are counted in the printed
summary. Histories longer than the embedder reads are truncated by its policy ("recent": the
most recent ``max_len`` events), and events of items the embedder never saw are read as the
unknown item; both are counted in the summary. Output columns: ``user_id``, ``embedding``,
``has_events``, ``events_used``. The vector is the output of the embedder's user head, trained by the
contrastive loss; an embedder fitted without it (``loss.contrastive_weight: 0``) is refused, since that head
is its random initialisation — ``--vector fused`` writes the adapter's pooled features instead (any embedder).
``--out`` is a safe output (:mod:`data_pipelines.outputs`): an
earlier `embed` output is replaced, any other existing file only with ``--overwrite``, an input never.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from user_embed.errors import UserError


def main(argv: list[str], command: str = "embed") -> int:
    p = argparse.ArgumentParser(prog="user-embed embed", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="embedder folder (save_pretrained output)")
    p.add_argument("--data", required=True, help="prepared data folder")
    p.add_argument("--out", required=True, help="output parquet file (user_id, embedding)")
    p.add_argument("--users", default=None, help="comma-separated user ids (default: every user in users.parquet)")
    p.add_argument("--cutoff", type=int, default=None, help="only events before this Unix time")
    p.add_argument("--vector", choices=("head", "fused"), default="head",
                   help="head: the trained user head's vector (default); fused: the adapter's pooled features")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file that `embed` did not write")
    args = p.parse_args(argv)
    from data_pipelines.outputs import check_output_file, output_file
    from user_embed.output_kinds import EMBEDDINGS

    target = {"kind": EMBEDDINGS, "inputs": [args.checkpoint, args.data], "overwrite": args.overwrite}
    check_output_file(args.out, **target)  # before anything is loaded
    import polars as pl

    from user_embed.embedder import UserEmbedder
    from user_embed.store import UserStore

    embedder = UserEmbedder.from_pretrained(args.checkpoint)
    if args.vector == "head" and embedder.user_head_trained is False:
        raise UserError(f"{args.checkpoint}: its user head was never trained (fitted with loss.contrastive_weight "
                        "0), so its vectors would be a random projection; pass --vector fused for the pooled "
                        "features, or retrain with contrastive_weight > 0")
    users = UserStore.from_folder(args.data)
    ids = users.users["user_id"].to_list()
    if args.users:
        ids = [u.strip() for u in args.users.split(",") if u.strip()]
        unknown = [u for u in ids if u not in users]
        if unknown:
            raise UserError(f"--users: unknown user id(s) {unknown[:5]} (not in {args.data})")
    vectors = embedder.embed(users, ids, [args.cutoff] * len(ids), vector=args.vector).numpy()
    histories = users.histories(embedder.spec)
    windows = [histories.window(u, args.cutoff, embedder.max_len) for u in ids]
    frame = pl.DataFrame({"user_id": ids, "embedding": vectors.tolist(),
                          "has_events": [len(w.items) > 0 for w in windows],
                          "events_used": [len(w.items) for w in windows]})
    with output_file(args.out, mode="wb", **target) as handle:  # the file appears complete or not at all
        frame.write_parquet(handle)
    out = Path(args.out)
    no_events = int((~frame["has_events"]).sum())
    print(f"wrote {out}: {len(ids):,} users x {vectors.shape[1]} dims ({no_events} with no events: profile-only vectors)")
    truncated = [w.truncated for w in windows if w.truncated]
    if truncated:
        print(f"truncated (policy 'recent', most recent {embedder.max_len} events): {len(truncated):,} users, "
              f"{sum(truncated):,} older events not read")
    if histories.unknown_item_events:
        print(f"{histories.unknown_item_events:,} events of items the embedder was not trained on: "
              "read as the unknown item")
    return 0
