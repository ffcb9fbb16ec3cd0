"""`clover index build|update|merge|rebuild|delete|verify|stats`: build and maintain a video index.

Examples:

    clover index build ~/videos manifests/extra.jsonl --index idx --checkpoint ckpt/clover-tiny
    clover index update --index idx --checkpoint ckpt/clover-tiny --prune   # rescan, do only what changed
    clover index rebuild --index idx --factory HNSW32                       # new FAISS index, no re-encoding
    clover index delete 42 /videos/old.mp4 --index idx
    clover index verify --index idx --repair
    clover index stats --index idx --json

Sharded (one process per GPU; each writes idx/shard-III-of-NNN, then one merge; see docs/operations.md):

    torchrun --standalone --nproc_per_node=4 -m indexer.cli build ~/videos --index idx --checkpoint ckpt
    clover index build ~/videos --index idx --checkpoint ckpt --shard 2/4       # the same, one shard by hand
    clover index merge idx/shard-* --into idx-all

Every command prints a human summary, or one JSON object with --json. Killing a build at any moment and
running the same command again finishes it with the same result as an uninterrupted build.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from indexer.layout import IndexOpenError
from indexer.scan import ManifestError
from indexer.scheduler import DecodeWorkersBroken
from indexer.shard import local_device, parse_shard, shard_from_env, shard_index_dir
from indexer.vectors import VectorIndexError
from model.host_memory import keep_freed_memory


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, metavar="DIR", help="index directory")
    parser.add_argument("--db", metavar="URL", help="catalog DB URL (default: sqlite in the index directory)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")


def _add_indexing(parser: argparse.ArgumentParser, build: bool) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="Clover checkpoint directory")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=16, help="segments per encoder batch (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="decode processes; 0 = a thread (default 2)")
    parser.add_argument("--full-hash", action="store_true", help="fingerprint whole files, not size + ends")
    parser.add_argument("--retry-failed", action="store_true", help="retry files that failed before")
    parser.add_argument("--prune", action="store_true", help="drop catalog entries whose file is gone")
    parser.add_argument(
        "--checkpoint-every", type=float, default=300.0, metavar="S", help="rewrite FAISS every S seconds"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="index only shard I of N of the files, into DIR/shard-III-of-NNN (default under torchrun: "
        "RANK/WORLD_SIZE; an update of a shard directory keeps its shard)",
    )
    if build:
        parser.add_argument("--window", type=float, help="segment length in seconds (default 4)")
        parser.add_argument("--stride", type=float, help="seconds between segment starts (default = window)")
        parser.add_argument(
            "--factory", help='FAISS factory string, e.g. "Flat", "HNSW32" (default: by size)'
        )
        parser.add_argument("--pool-tokens", type=int, metavar="N", help="store N video tokens per segment")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clover index", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="index videos, directories and manifests (incremental)")
    build.add_argument(
        "libraries", nargs="+", metavar="LIBRARY", help="video files, directories, .jsonl/.csv"
    )
    _add_common(build)
    _add_indexing(build, build=True)

    update = commands.add_parser("update", help="rescan the index's libraries and do only what changed")
    update.add_argument(
        "libraries", nargs="*", metavar="LIBRARY", help="extra paths (default: those of builds)"
    )
    _add_common(update)
    _add_indexing(update, build=False)

    rebuild = commands.add_parser("rebuild", help="rebuild FAISS from stored embeddings (no re-encoding)")
    _add_common(rebuild)
    rebuild.add_argument("--factory", help='FAISS factory string, or "auto" (default: keep the current one)')
    rebuild.add_argument(
        "--no-compact", action="store_true", help="keep shards as they are (no space reclaimed)"
    )

    delete = commands.add_parser("delete", help="remove videos by catalog id or path")
    delete.add_argument("videos", nargs="+", metavar="VIDEO_ID|PATH")
    _add_common(delete)

    verify = commands.add_parser("verify", help="check catalog, stores, FAISS and index.json agree")
    _add_common(verify)
    verify.add_argument("--repair", action="store_true", help="make them agree (rebuild FAISS, drop orphans)")

    stats = commands.add_parser("stats", help="counts, sizes and settings of an index")
    _add_common(stats)

    merge = commands.add_parser("merge", help="merge the shards of a sharded build into one index")
    merge.add_argument("sources", nargs="+", metavar="SHARD_DIR", help="indexes to merge (e.g. idx/shard-*)")
    merge.add_argument("--into", required=True, metavar="DIR", help="the merged index (created or updated)")
    merge.add_argument(
        "--db", metavar="URL", help="catalog DB URL of the merged index (default: sqlite in DIR)"
    )
    merge.add_argument("--factory", help="FAISS factory string for the merged index (default: by size)")
    merge.add_argument(
        "--prune", action="store_true", help="drop videos of DIR that none of the sources has any more"
    )
    merge.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result, code = COMMANDS[args.command](args)
    except (IndexOpenError, DecodeWorkersBroken, VectorIndexError, ManifestError, ShardError) as error:
        print(f"clover index {args.command}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(_human(args.command, result))
    return code


class ShardError(ValueError):
    """A --shard that cannot be used: badly written, or with a shared --db catalog."""


def _library_shard(args: argparse.Namespace) -> tuple[int, int] | None:
    """--shard I/N, else the torchrun rank when launched with several processes, else None (everything)."""
    if args.shard:
        try:
            shard = parse_shard(args.shard)
        except ValueError as error:
            raise ShardError(str(error)) from None
    else:
        shard = shard_from_env()
    if shard is not None and args.db:
        raise ShardError(
            "a shard keeps its catalog as SQLite in its own directory: drop --db here and give it to "
            "`clover index merge --db URL` instead"
        )
    return shard


def _load_model(args: argparse.Namespace) -> tuple[Any, str]:
    from model import Clover
    from model.checkpoint import fingerprint

    device = local_device() if args.device == "auto" else args.device
    return Clover.from_pretrained(args.checkpoint, map_location=device).eval(), fingerprint(args.checkpoint)


def _index_command(args: argparse.Namespace) -> tuple[dict, int]:
    from indexer.pipeline import IndexOptions, index_paths, known_sources

    shard = _library_shard(args)
    index_dir = shard_index_dir(args.index, shard)
    libraries = list(args.libraries)
    if args.command == "update":
        libraries = [*known_sources(index_dir, args.db), *libraries]
    options = IndexOptions(
        window=getattr(args, "window", None),
        stride=getattr(args, "stride", None),
        batch_size=args.batch_size,
        workers=args.workers,
        factory=getattr(args, "factory", None),
        pool_tokens=getattr(args, "pool_tokens", None),
        full_hash=args.full_hash,
        retry_failed=args.retry_failed,
        prune=args.prune,
        checkpoint_seconds=args.checkpoint_every,
        progress=not args.no_progress and sys.stderr.isatty(),
        library_shard=shard,
    )
    model, fingerprint = _load_model(args)
    summary = index_paths(
        index_dir,
        libraries,
        model,
        db_url=args.db,
        checkpoint_fingerprint=fingerprint,
        options=options,
        command=args.command,
    )
    return summary, 0


def _merge(args: argparse.Namespace) -> tuple[dict, int]:
    from indexer.merge import merge_indexes

    return merge_indexes(args.sources, args.into, factory=args.factory, db_url=args.db, prune=args.prune), 0


def _rebuild(args: argparse.Namespace) -> tuple[dict, int]:
    from indexer.pipeline import rebuild_index

    return rebuild_index(
        args.index, factory=args.factory, db_url=args.db, compact_shards=not args.no_compact
    ), 0


def _delete(args: argparse.Namespace) -> tuple[dict, int]:
    from indexer.pipeline import delete_videos

    result = delete_videos(args.index, args.videos, db_url=args.db)
    return result, 0 if not result["not_found"] else 1


def _verify(args: argparse.Namespace) -> tuple[dict, int]:
    from indexer.pipeline import verify_index

    report = verify_index(args.index, db_url=args.db, repair=args.repair)
    if args.repair and not report["ok"]:
        after = verify_index(args.index, db_url=args.db)
        report["after_repair"] = after
        return report, 0 if after["ok"] else 1
    return report, 0 if report["ok"] else 1


def _stats(args: argparse.Namespace) -> tuple[dict, int]:
    from indexer.reader import IndexReader

    with IndexReader.open(args.index, db_url=args.db) as reader:
        return reader.stats(), 0


COMMANDS = {
    "build": _index_command,
    "update": _index_command,
    "rebuild": _rebuild,
    "delete": _delete,
    "verify": _verify,
    "stats": _stats,
    "merge": _merge,
}


def _human(command: str, result: dict) -> str:
    if command in ("build", "update"):
        lines = (
            [f"shard {result['library_shard']} -> {result['index_dir']}"] if result["library_shard"] else []
        )
        lines += [
            f"{result['scanned']} files scanned: {result['new']} new, {result['changed']} changed, "
            f"{result['unchanged']} unchanged, {result['resumed']} resumed",
            f"indexed {result['indexed']} videos ({result['segments_added']} segments, "
            f"{result['clips_per_s']} clips/s), {result['failed']} failed, {result['pruned']} pruned",
        ]
        lines += [f"  failed: {f['path']}: {f['error']}" for f in result["failures"]]
        lines += [f"  missing: {m['path']}: {m['error']}" for m in result["missing"]]
        lines.append(
            f"index: {result['videos']} videos, {result['segments']} segments, {result['vectors']} vectors "
            f"({result['factory']}), {result['failed_total']} failed in total"
        )
        timings = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in result["timings"].items())
        lines.append(f"time: {result['seconds']:.2f}s ({timings})")
        return "\n".join(lines)
    if command == "merge":
        lines = [
            f"merged {len(result['sources'])} indexes into {result['index_dir']}: {result['videos_added']} videos "
            f"added, {result['videos_replaced']} replaced, {result['videos_unchanged']} unchanged, "
            f"{result['videos_pruned']} pruned ({result['segments_copied']} segments copied)",
            f"index: {result['videos']} videos, {result['segments']} segments, {result['vectors']} vectors "
            f"({result['factory']}), {result['failed_total']} failed in total; {result['seconds']:.2f}s",
        ]
        if result["missing_shards"]:
            lines.append(f"  not merged yet: shards {', '.join(result['missing_shards'])}")
        return "\n".join(lines)
    if command == "verify":
        lines = ["ok" if result["ok"] else "problems:"] + [f"  {p}" for p in result["problems"]]
        lines += [f"  repaired: {r}" for r in result["repaired"]]
        if "after_repair" in result:
            lines.append("after repair: " + ("ok" if result["after_repair"]["ok"] else "still inconsistent"))
        return "\n".join(lines)
    if command == "delete":
        text = f"deleted {result['deleted']} videos; {result['vectors']} vectors remain"
        return text + (f"\n  not found: {', '.join(result['not_found'])}" if result["not_found"] else "")
    return "\n".join(f"{key}: {value}" for key, value in result.items())


if __name__ == "__main__":  # python -m / torchrun -m: the batch job `clover` would start
    keep_freed_memory()
    sys.exit(main())
