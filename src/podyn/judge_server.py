"""A local OpenAI-compatible chat-completions server that judges the synthetic task by its gold
reward, so that the LLM judge's whole path (the official ``openai`` client, HTTP, timeouts,
retries, the cache) can be tested and benchmarked offline with known right answers.

It answers ``POST /v1/chat/completions`` (and ``/chat/completions``) for the judge templates of
:mod:`podyn.llm_judge`: it reads the query and the two responses from the prompt, scores both
with :func:`podyn.data.synthetic.gold_reward` and names the better one. A gold tie is answered
"A" (a position-biased judge), so that asking in both orders gives an inconsistent pair, a tie,
as the gold judge scores it. Real text has no gold reward: ``--verdict longer`` names the
response with more words instead (LLM judges' known length bias, as a deterministic stand-in),
so that the judge's path can run offline on real dialogues (the paper config on the fixtures).
A request with ``logprobs`` (the weighted template) gets the top log-probs of the single-token verdicts instead.

Faults are injected on demand, for testing the client's handling of each:

- ``429`` (with ``Retry-After``), ``500``, ``503``;
- ``stall``: answers only after ``stall_s`` seconds (past the client's timeout);
- ``drop``: closes the connection without a response;
- ``malformed``: a 200 whose JSON body is cut short;
- ``no_verdict``: a well-formed reply that names neither response;
- ``wrong_types``: valid JSON with fields of the wrong type (the content a list, a log-probability
  of 1000);
- ``401``: rejects the request as unauthorised;
- ``html``: a 200 with an HTML page, as a web server answers at a wrong ``judge.base_url``.

Which requests are faulted: ``fault_rate`` picks a fixed share of the distinct requests (by a
seeded hash of the body) and gives each a fault kind drawn from ``faults``; ``persistent``
decides whether that fault repeats on every attempt or only on the first (then the retry is
answered). ``POST /_faults`` with ``{"next": [kinds]}`` faults the next requests, in order.

Control endpoints: ``GET /_stats`` (request counts by outcome, answers per prompt text),
``POST /_config`` (change any option), ``POST /_reset`` (clear the counters).

Run ``python -m podyn.judge_server --help``; it prints ``listening on <url>`` when ready. The
key it expects (if any) is read from the environment variable named by ``--api-key-env``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .data.synthetic import gold_reward

FAULT_KINDS = ("429", "500", "503", "stall", "drop", "malformed", "no_verdict", "wrong_types", "401", "html")
TRANSIENT_FAULTS = ("429", "500", "503", "stall", "drop", "malformed", "no_verdict", "wrong_types")
VERDICTS = ("gold", "longer")  # how a request is answered: the synthetic gold reward, or the longer response


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def split_judge_prompt(text: str) -> tuple[str, str, str]:
    """(query, response A, response B) from a judge prompt of :mod:`podyn.llm_judge`."""
    query = text.split("Query: ", 1)[1].split("\n\nResponse A:\n", 1)[0]
    first = text.split("\n\nResponse A:\n", 1)[1].split("\n\nResponse B:\n", 1)[0]
    second = text.split("\n\nResponse B:\n", 1)[1].split("\n\n", 1)[0]
    return query, first, second


class JudgeServerState:
    """Options, counters and the fault plan, shared by the handler threads."""

    def __init__(self, **options: Any) -> None:
        self.lock = threading.Lock()
        self.options = {
            "latency_s": 0.0,
            "fault_rate": 0.0,
            "faults": list(TRANSIENT_FAULTS),
            "persistent": False,
            "seed": 0,
            "stall_s": 5.0,
            "retry_after_s": 1,
            "length_penalty": 0.2,
            "tie_margin": 1e-9,
            "verdict": "gold",
            "models": None,
            "api_key": None,
        }
        self.configure(**options)
        self.reset()

    def configure(self, **options: Any) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise ValueError(f"unknown judge-server options: {sorted(unknown)}")
        if options.get("verdict", "gold") not in VERDICTS:
            raise ValueError(f"unknown verdict {options['verdict']!r}; known: {VERDICTS}")
        bad = set(options.get("faults", [])) - set(FAULT_KINDS)
        if bad:
            raise ValueError(f"unknown fault kinds {sorted(bad)}; known: {FAULT_KINDS}")
        with self.lock:
            self.options.update(options)

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.outcomes: dict[str, int] = {}
            self.attempts: dict[str, int] = {}  # per prompt text
            self.answered: dict[str, int] = {}  # per prompt text: replies that carried a verdict
            self.events: list[tuple[float, str, str]] = []  # (time, prompt sha, outcome)
            self.queue: list[str] = []

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "outcomes": dict(self.outcomes),
                "answered": dict(self.answered),
                "attempts": dict(self.attempts),
                "events": list(self.events),
            }

    def decide(self, prompt_sha: str) -> str | None:
        """The fault for this request (None: answer it), and count the attempt."""
        with self.lock:
            self.requests += 1
            attempt = self.attempts.get(prompt_sha, 0)
            self.attempts[prompt_sha] = attempt + 1
            if self.queue:
                return self.queue.pop(0)
            opts = self.options
            if opts["fault_rate"] <= 0 or not opts["faults"] or (attempt > 0 and not opts["persistent"]):
                return None
            draw = int(_sha(f"{opts['seed']}\0{prompt_sha}")[:12], 16) / 16**12
            if draw >= opts["fault_rate"]:
                return None
            return opts["faults"][int(draw / opts["fault_rate"] * len(opts["faults"])) % len(opts["faults"])]

    def record(self, prompt_sha: str, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.events.append((time.time(), prompt_sha, outcome))
            if outcome == "answered":
                self.answered[prompt_sha] = self.answered.get(prompt_sha, 0) + 1


def _completion(model: str, content: str, logprobs: list[dict] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": content},
    }
    if logprobs is not None:
        choice["logprobs"] = {
            "content": [{"token": content, "logprob": logprobs[0]["logprob"], "bytes": None, "top_logprobs": logprobs}]
        }
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
    }


def gold_verdict(text: str, length_penalty: float, tie_margin: float) -> tuple[str, float]:
    """('A' or 'B', P(A preferred)) for a judge prompt, by the synthetic task's gold reward."""
    query, first, second = split_judge_prompt(text)
    prompt = "\n\n" + query  # the judge strips the prompt's leading blank line
    diff = gold_reward(prompt, first, length_penalty) - gold_reward(prompt, second, length_penalty)
    if abs(diff) <= tie_margin:
        return "A", 0.5
    return ("A", 0.99) if diff > 0 else ("B", 0.01)


def longer_verdict(text: str) -> tuple[str, float]:
    """('A' or 'B', P(A preferred)) for a judge prompt: the response with more words wins; equal
    lengths are answered 'A', a tie when asked in both orders (any text, no gold reward needed)."""
    _, first, second = split_judge_prompt(text)
    diff = len(first.split()) - len(second.split())
    if diff == 0:
        return "A", 0.5
    return ("A", 0.99) if diff > 0 else ("B", 0.01)


class JudgeHandler(BaseHTTPRequestHandler):
    server_version = "podyn-judge-server/1"
    protocol_version = "HTTP/1.1"

    @property
    def state(self) -> JudgeServerState:
        return self.server.state  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the counters are the log
        pass

    def _send(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
        self._send(
            status, {"error": {"message": message, "type": "invalid_request_error", "code": code}}, headers
        )

    def do_GET(self) -> None:
        if self.path == "/_stats":
            self._send(200, self.state.stats())
        else:
            self._error(404, f"no route {self.path}", "not_found")

    def _read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        body = self._read_body()
        if self.path in ("/_config", "/_faults", "/_reset"):
            payload = json.loads(body or b"{}")
            if self.path == "/_reset":
                self.state.reset()
            elif self.path == "/_faults":
                with self.state.lock:
                    self.state.queue.extend(payload.get("next", []))
            else:
                self.state.configure(**payload)
            self._send(200, {"ok": True})
            return
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route {self.path}", "not_found")
            return
        self._chat(json.loads(body))

    def _chat(self, request: dict[str, Any]) -> None:
        state, opts = self.state, self.state.options
        text = request["messages"][-1]["content"]
        sha = _sha(text)
        fault = state.decide(sha)
        expected = opts["api_key"]
        if fault == "401" or (expected and self.headers.get("Authorization") != f"Bearer {expected}"):
            state.record(sha, "401")
            self._error(401, "Incorrect API key provided.", "invalid_api_key")
            return
        if opts["models"] and request.get("model") not in opts["models"]:
            state.record(sha, "404_model")
            self._error(404, f"The model `{request.get('model')}` does not exist.", "model_not_found")
            return
        if opts["latency_s"]:
            time.sleep(opts["latency_s"])
        if fault is not None:
            state.record(sha, fault)
        if fault in ("429", "500", "503"):
            headers = {"Retry-After": str(opts["retry_after_s"])} if fault == "429" else None
            self._error(int(fault), f"injected {fault}", f"injected_{fault}", headers)
            return
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault == "malformed":
            self._send(200, None, raw=b'{"id": "chatcmpl-local", "choices": [{"index": 0, "mess')
            return
        if fault == "html":
            page = b"<!doctype html><html><head><title>Welcome</title></head><body>It works.</body></html>"
            self._send(200, None, raw=page, content_type="text/html; charset=utf-8")
            return
        if fault == "wrong_types":  # valid JSON, fields of the wrong type: a list as content, logprob 1000
            model = request.get("model", "")
            if request.get("logprobs"):
                self._send(200, _completion(model, "A", [{"token": "A", "logprob": 1000.0, "bytes": None}]))
            else:
                reply = _completion(model, "More helpful: A")
                reply["choices"][0]["message"]["content"] = [{"type": "text", "text": "More helpful: A"}]
                self._send(200, reply)
            return
        if fault == "stall":
            time.sleep(opts["stall_s"])  # the client has given up by now: the answer is not counted
        if fault is None:
            self.state.record(sha, "answered")
        self._answer(request, text, fault == "no_verdict")

    def _answer(self, request: dict[str, Any], text: str, no_verdict: bool) -> None:
        opts = self.state.options
        model = request.get("model", "")
        if no_verdict:
            if request.get("logprobs"):
                self._send(200, _completion(model, "C", [{"token": "C", "logprob": 0.0, "bytes": None}]))
            else:
                content = "Comparison: both responses have merits and flaws.\nI cannot choose between them."
                self._send(200, _completion(model, content))
            return
        if opts["verdict"] == "longer":
            choice, p_first = longer_verdict(text)
        else:
            choice, p_first = gold_verdict(text, opts["length_penalty"], opts["tie_margin"])
        if request.get("logprobs"):
            top = sorted([("A", math.log(p_first)), ("B", math.log(1 - p_first))], key=lambda t: -t[1])
            logprobs = [{"token": token, "logprob": lp, "bytes": None} for token, lp in top]
            self._send(200, _completion(model, top[0][0], logprobs))
        else:
            content = f"Comparison: Response {choice} does the task better.\nMore helpful: {choice}"
            self._send(200, _completion(model, content))


class JudgeServer:
    """The server on 127.0.0.1 in a background thread (in-process); :func:`main` runs it as
    its own process, which is how the tests and the benchmark start it."""

    def __init__(self, port: int = 0, **options: Any) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), JudgeHandler)
        self.httpd.daemon_threads = True
        self.httpd.state = JudgeServerState(**options)  # type: ignore[attr-defined]
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.1)

    def start(self) -> JudgeServer:
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m podyn.judge_server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of distinct requests that are faulted")
    parser.add_argument(
        "--faults", default=",".join(TRANSIENT_FAULTS), help=f"comma-separated kinds among {FAULT_KINDS}"
    )
    parser.add_argument("--persistent", action="store_true", help="a faulted request is faulted on every attempt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hash that picks faulted requests")
    parser.add_argument("--stall", type=float, default=5.0, help="seconds a 'stall' fault waits before answering")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After (seconds) sent with a 429")
    parser.add_argument("--length-penalty", type=float, default=0.2, help="the synthetic task's length_penalty")
    parser.add_argument(
        "--verdict",
        choices=VERDICTS,
        default="gold",
        help="gold: the synthetic task's gold reward; longer: the response with more words (any text)",
    )
    parser.add_argument("--models", default=None, help="comma-separated model names served (default: any)")
    parser.add_argument("--api-key-env", default=None, help="environment variable holding the key to require")
    args = parser.parse_args(argv)
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        parser.error(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    server = JudgeServer(
        args.port,
        latency_s=args.latency,
        fault_rate=args.fault_rate,
        faults=[f for f in args.faults.split(",") if f],
        persistent=args.persistent,
        seed=args.seed,
        stall_s=args.stall,
        retry_after_s=args.retry_after,
        length_penalty=args.length_penalty,
        verdict=args.verdict,
        models=args.models.split(",") if args.models else None,
        api_key=api_key,
    )
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
