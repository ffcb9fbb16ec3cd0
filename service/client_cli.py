"""`clover search` and `clover qa`: talk to a running `clover serve` over HTTP (stdlib only).

    clover search "a dog catches a frisbee" -k 5 --rerank
    clover qa 12 "what is the dog doing?" --candidates running sleeping swimming

The server URL comes from `--url`, else `CLOVER_URL`, else http://127.0.0.1:8000. Exit codes: 0 ok,
1 the server refused the request (its `detail` is printed), 2 the server could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def request_json(url: str, method: str = "GET", body: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
    """One JSON request; a 4xx/5xx becomes ClientError with the server's `detail`."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read().decode()).get("detail", exc.reason)
        except (ValueError, AttributeError):
            detail = exc.reason
        raise ClientError(f"server answered {exc.code}: {detail}", 1) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClientError(f"cannot reach {url}: {reason}", 2) from exc


def _base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--url", default=os.environ.get("CLOVER_URL", DEFAULT_URL),
                   help=f"server URL (env CLOVER_URL, default {DEFAULT_URL})")
    p.add_argument("--json", action="store_true", help="print the server's JSON response")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")
    return p


def _fmt_time(seconds: float) -> str:
    minutes, secs = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes)}:{secs:04.1f}"


def format_search(result: dict[str, Any]) -> str:
    hits = result.get("results", [])
    rerank = result.get("rerank")
    lines = [f"{len(hits)} result(s) for {result.get('query')!r} in {result.get('took_ms')} ms"
             + (f" (re-ranked top {result.get('rerank_k')})" if rerank else "")]
    for rank, hit in enumerate(hits, start=result.get("offset", 0) + 1):
        score = f"{hit['score']:.3f}"
        if hit.get("rerank_score") is not None:
            score += f" rerank {hit['rerank_score']:+.2f}"
        moment = f"{_fmt_time(hit['start'])}-{_fmt_time(hit['end'])}"
        title = hit.get("title") or os.path.basename(hit.get("path", ""))
        lines.append(f"{rank:>3}. [{hit['video_id']}] {title}  {moment}  score {score}")
        lines.append(f"     {hit.get('path', '')}")
    if result.get("has_more"):
        lines.append("     (more results: use --offset)")
    return "\n".join(lines)


def search_main(argv: list[str] | None = None) -> int:
    p = _base_parser("clover search", "Search a running Clover service for videos matching a text query.")
    p.add_argument("query", help="the text query")
    p.add_argument("-k", type=int, default=10, help="results to show (default 10)")
    p.add_argument("--offset", type=int, default=0, help="results to skip")
    p.add_argument("--rerank", action="store_true", help="re-rank the top hits with the fusion encoder")
    p.add_argument("--rerank-k", type=int, default=None, help="videos to re-rank (server default otherwise)")
    args = p.parse_args(argv)
    params: dict[str, Any] = {"q": args.query, "k": args.k, "offset": args.offset,
                              "rerank": str(args.rerank).lower()}
    if args.rerank_k is not None:
        params["rerank_k"] = args.rerank_k
    url = f"{args.url.rstrip('/')}/search?{urllib.parse.urlencode(params)}"
    try:
        result = request_json(url, timeout=args.timeout)
    except ClientError as exc:
        print(f"clover search: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result, indent=2) if args.json else format_search(result))
    return 0


def format_answer(result: dict[str, Any]) -> str:
    lines = [f"{result['answer']}  (p={result['score']:.3f}, {result.get('took_ms')} ms)"]
    for cand in result.get("candidates") or []:
        mark = "*" if cand["text"] == result["answer"] else " "
        lines.append(f"  {mark} {cand['text']:<30} {cand['score']:.3f}")
    return "\n".join(lines)


def qa_main(argv: list[str] | None = None) -> int:
    p = _base_parser("clover qa", "Ask a running Clover service a question about one video.")
    p.add_argument("video_id", help="the video's id (see `clover search` or GET /videos)")
    p.add_argument("question", help="the question")
    p.add_argument("--candidates", nargs="+", metavar="ANSWER",
                   help="multiple-choice answers; without them the answer is open-ended")
    p.add_argument("--start", type=float, default=None, help="only look at the video from here (seconds)")
    p.add_argument("--end", type=float, default=None, help="only look at the video until here (seconds)")
    args = p.parse_args(argv)
    body = {"video_id": args.video_id, "question": args.question, "candidates": args.candidates,
            "start": args.start, "end": args.end}
    try:
        result = request_json(f"{args.url.rstrip('/')}/qa", method="POST", body=body, timeout=args.timeout)
    except ClientError as exc:
        print(f"clover qa: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result, indent=2) if args.json else format_answer(result))
    return 0
