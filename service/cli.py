"""The `clover` console script.

One entry point for every program. Each subcommand lives in the package that owns it and is imported only when
it runs, so `clover serve` never loads training code and `clover --help` loads nothing heavy.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module:function taking argv and returning an exit code, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("training.synthworld.cli:main", "render the synthetic video world (MP4 + JSONL manifests)"),
    "train": ("training.cli_train:main", "pretrain Clover (tri-modal alignment, ranking, semantic MLM)"),
    "finetune": ("training.cli_finetune:main", "fine-tune for retrieval, open-ended or multiple-choice QA"),
    "eval": ("training.cli_eval:main", "evaluate retrieval (R@K, ranks) and QA accuracy"),
    "index": ("indexer.cli:main", "build|update|merge|rebuild|delete|verify|stats a video index"),
    "serve": ("service.serve:main", "run the HTTP search and QA service"),
    "search": ("service.client_cli:search_main", "search a running service (or an index directly)"),
    "qa": ("service.client_cli:qa_main", "ask a question about a video"),
    "demo": ("service.demo:main", "train a tiny model, index a library and serve it"),
}

# Long CPU jobs whose steps allocate the same large tensors again and again (model/host_memory.py).
BATCH_JOBS = {"train", "finetune", "eval", "index", "demo"}


def _usage() -> str:
    lines = ["usage: clover <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    lines += ["", "Run `clover <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"clover: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if name in BATCH_JOBS:
        from model.host_memory import keep_freed_memory

        keep_freed_memory()
    module_name, func_name = SUBCOMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
