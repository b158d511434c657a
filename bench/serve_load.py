"""Load on `python -m glm_eval.serve`: N concurrent chat requests against the server, next to in-process batched
generation of the same prompts (the same chat-template tokens, greedy, the same max new tokens), in one session.

The server runs in a subprocess on loopback with smollm2-135m-instruct; requests are the first N GSM8K test
questions as one user turn each, all sent at once (N client threads). In-process: the same model through
glm-eval's HF backend (slot generator) on the same prompts. Prints requests/s and generated tokens/s of both,
the errors seen, and the share of identical replies.

    python bench/serve_load.py [--requests 200] [--max-new-tokens 64] [--data-dir ../shared/data]

Last line: server_rps=<x> server_tok_s=<x> inprocess_rps=<x> inprocess_tok_s=<x> ratio=<server/in-process> errors=<n>
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from glm_eval.engine.overrides import compose_config  # noqa: E402
from glm_eval.core.protocol import GenerationRequest  # noqa: E402
from glm_eval.core import log  # noqa: E402
from glm_eval.engine.run import LoadedModel  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "glm_eval.serve", "model=smollm2-135m-instruct", f"port={port}"],
                            cwd=REPO)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not come up")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    questions = [json.loads(line)["question"] for line in open(Path(args.data_dir) / "gsm8k" / "test.jsonl")]
    questions = questions[:args.requests]

    port = free_port()
    server = start_server(port)
    try:
        def ask(question: str) -> tuple[str, int, str | None]:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=3600, json={
                    "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": question}],
                    "temperature": 0, "max_tokens": args.max_new_tokens})
                reply.raise_for_status()
                data = reply.json()
                return data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"], None
            except (httpx.HTTPError, KeyError, ValueError) as e:
                return "", 0, f"{type(e).__name__}: {e}"

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(questions)) as pool:
            served = list(pool.map(ask, questions))
        server_s = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(30)
    errors = [e for _, _, e in served if e]

    log.setup()
    cfg = compose_config(["model=smollm2-135m-instruct"])
    loaded = LoadedModel(cfg)
    backend = loaded.backend  # load before timing, as the server had loaded before the requests
    requests = [GenerationRequest(loaded.renderer.render_messages((("user", q),)), args.max_new_tokens)
                for q in questions]
    local: dict[int, object] = {}
    started = time.perf_counter()
    backend.generate(requests, local.__setitem__)
    local_s = time.perf_counter() - started

    server_tokens = sum(t for _, t, _ in served)
    local_tokens = sum(r.num_tokens for r in local.values())
    same = sum(text == local[i].text for i, (text, _, _) in enumerate(served)) / len(questions)
    print(f"server: {len(questions)} concurrent requests in {server_s:.1f} s, {len(errors)} errors"
          + (f" (e.g. {errors[0]})" if errors else ""))
    print(f"in-process: {len(questions)} prompts in {local_s:.1f} s; identical replies {same:.3f}")
    print(f"server_rps={len(questions) / server_s:.2f} server_tok_s={server_tokens / server_s:.1f} "
          f"inprocess_rps={len(questions) / local_s:.2f} inprocess_tok_s={local_tokens / local_s:.1f} "
          f"ratio={local_s / server_s:.2f} errors={len(errors)}")


if __name__ == "__main__":
    main()
