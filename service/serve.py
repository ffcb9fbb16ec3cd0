"""`clover serve`: run the HTTP service with uvicorn.

Every option can also come from the environment (`CLOVER_INDEX_DIR`, `CLOVER_CHECKPOINT`, `CLOVER_DB_URL`,
`CLOVER_HOST`, `CLOVER_PORT`, `CLOVER_API_KEY`, `CLOVER_LIBRARY_ROOTS`, ...; see service/core/config.py);
options given here win. Prefer the environment for the API key, which would otherwise show in `ps`.

    clover serve --index runs/index --checkpoint runs/ckpt --library-root ~/Videos --port 8000
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clover serve", description="Serve video search and QA over HTTP.")
    p.add_argument("--index", dest="index_dir", help="index directory (env CLOVER_INDEX_DIR)")
    p.add_argument("--checkpoint", help="Clover checkpoint directory the index was built with (CLOVER_CHECKPOINT)")
    p.add_argument("--db", dest="db_url", help="catalog DB URL; default: the SQLite file in the index (CLOVER_DB_URL)")
    p.add_argument("--host", help="bind address (CLOVER_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (CLOVER_PORT, default 8000)")
    p.add_argument("--library-root", dest="library_roots", action="append",
                   help="directory whose videos may be indexed and streamed; repeat for several (CLOVER_LIBRARY_ROOTS)")
    p.add_argument("--upload-dir", help="where uploaded videos are stored (CLOVER_UPLOAD_DIR, default <index>/uploads)")
    p.add_argument("--cors-origin", dest="cors_origins", action="append",
                   help="browser origin allowed to call the API; repeat for several (CLOVER_CORS_ORIGINS)")
    p.add_argument("--api-key", help="admin key for X-API-Key (prefer CLOVER_API_KEY)")
    p.add_argument("--device", help="torch device: cpu, cuda, auto (CLOVER_DEVICE)")
    p.add_argument("--log-level", help="uvicorn log level (CLOVER_LOG_LEVEL, default info)")
    return p


def settings_from_args(args: argparse.Namespace) -> Any:
    from service.core.config import Settings

    overrides = {key: value for key, value in vars(args).items() if value is not None}
    return Settings(**overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        from service.core.errors import readable_validation_errors

        missing = {str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing"}
        hints = {"index_dir": "--index / CLOVER_INDEX_DIR", "checkpoint": "--checkpoint / CLOVER_CHECKPOINT"}
        if missing:
            print(f"clover serve: missing {', '.join(hints.get(m, m) for m in sorted(missing))}", file=sys.stderr)
        else:
            print(f"clover serve: invalid settings: {readable_validation_errors(list(exc.errors()))}", file=sys.stderr)
        return 2

    import logging

    import uvicorn

    from service.main import create_app

    # uvicorn configures only its own loggers; the service's (loading, jobs, errors) go to stderr too
    level = "DEBUG" if settings.log_level == "trace" else settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                proxy_headers=True, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
