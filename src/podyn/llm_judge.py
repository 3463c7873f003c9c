"""An LLM as judge (method.md §6) through any OpenAI-compatible chat-completions endpoint, with
the official ``openai`` client.

- **Orders.** ``judge.order: both`` (default) asks with the method's response as A and then as
  B; an inconsistent pair is a tie. ``random`` asks once, in an order drawn from a seeded hash
  of the prompt (AlpacaEval's convention).
- **Templates.** ``dpo`` (default): the DPO paper's GPT-4 prompt, a one-sentence comparison then
  ``More helpful: A|B``. ``weighted``: a single-token verdict whose log-probs give the
  probability that the method's response is preferred (AlpacaEval 2's manner); the score is
  that probability instead of a hard 0/1.
- **Identical responses** are a tie without a call.
- **Failures by kind.** 401, 403, 404, a bad model name, an exhausted quota and a reply that
  is not JSON (a web page at a wrong ``judge.base_url``) stop the job at once with a message
  naming the setting to fix. 429, 5xx, timeouts, dropped connections and
  malformed replies are retried (``judge.max_retries``) with exponential backoff and jitter,
  honouring ``Retry-After``. A reply without a verdict is asked again (``judge.parse_retries``).
  A request that still has no answer makes its prompt *invalid*: left out of the win rate and
  counted; the job fails only if more than ``judge.max_invalid_fraction`` are invalid.
- **Concurrency.** ``judge.concurrency`` requests in flight (threads sharing one client); each
  answer depends only on its request, so results do not depend on the concurrency.
- **Cache.** Every answer is appended to the experiment-wide cache (:mod:`podyn.judge_cache`),
  keyed on model, template (name and text hash), temperature, prompt and both responses.
- **Cost.** Before the first call the job prints the calls still needed after the cache and an
  estimate of the tokens; ``judge.max_calls`` stops it before more requests than that are sent.
- **Secrets.** The key is read from the environment variable named by ``judge.api_key_env``,
  passed to the client only, and removed from every message this module prints or raises.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import JudgeConfig
from .judge_cache import JudgeCache
from .judges import Comparison, JudgeError

# the DPO paper's GPT-4 prompt (its appendix), verbatim: long lines are kept as they are
DPO_TEMPLATE = """For the following query to a chatbot, which response is more helpful?

Query: {prompt}

Response A:
{first}

Response B:
{second}

FIRST provide a one-sentence comparison of the two responses and explain which you feel is more helpful. SECOND, on a new line, state only "A" or "B" to indicate which response is more helpful. Your response should use the format:
Comparison: <one-sentence comparison and explanation>
More helpful: <"A" or "B">"""

WEIGHTED_TEMPLATE = """You compare two responses of an AI assistant to the same query and decide which one is more
helpful: more accurate, more complete and better suited to what the query asks. Ignore which response comes first,
and do not prefer a response for being longer.

Query: {prompt}

Response A:
{first}

Response B:
{second}

Which response is more helpful? Answer with a single letter, A or B, and nothing else."""

CHARS_PER_TOKEN = 4  # the cost estimate's rule of thumb for English text
DPO_REPLY_TOKENS = 60  # a one-sentence comparison and the verdict line


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    weighted: bool

    @property
    def version(self) -> str:
        """A hash of the text: editing the prompt invalidates its cached answers."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]


TEMPLATES = {"dpo": Template("dpo", DPO_TEMPLATE, False), "weighted": Template("weighted", WEIGHTED_TEMPLATE, True)}


def parse_choice(text: str) -> str | None:
    """'A' or 'B' from the judge's ``More helpful:`` line; None when it names neither."""
    for line in reversed(text.strip().splitlines()):
        if "More helpful:" in line:
            choice = line.split("More helpful:")[-1].strip().strip('"').strip("'").strip().rstrip(".")
            return choice if choice in ("A", "B") else None
    return None


def parse_weighted(top_logprobs: list[tuple[str, float]]) -> float | None:
    """P(A preferred) from the first reply token's top log-probs: p_A / (p_A + p_B), a verdict
    missing from the list counting as probability 0; None when neither is listed."""
    best: dict[str, float] = {}
    for token, logprob in top_logprobs:
        if not isinstance(token, str):
            raise TypeError(f"a top_logprobs token is {type(token).__name__}, not a string")
        if isinstance(logprob, bool) or not isinstance(logprob, int | float) or not logprob <= 1e-6:
            raise ValueError(f"log-probability {logprob!r} of token {token!r} is not a number <= 0")
        letter = token.strip()
        if letter in ("A", "B"):
            best[letter] = max(best.get(letter, -math.inf), logprob)
    log_a, log_b = best.get("A", -math.inf), best.get("B", -math.inf)
    if log_a == log_b == -math.inf:  # neither listed, or both with probability 0
        return None
    p_a, p_b = math.exp(log_a), math.exp(log_b)
    if p_a + p_b == 0:  # both below exp's range (log-probs < -745): their ratio from the difference
        return 1.0 / (1.0 + math.exp(min(log_b - log_a, 700.0)))
    return p_a / (p_a + p_b)


def order_is_forward(prompt: str, seed: int) -> bool:
    """``judge.order: random``: whether the method's response goes first, by a seeded hash."""
    return hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()[0] % 2 == 0


def retry_delay(attempt: int, base: float, cap: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): the server's ``Retry-After`` when it
    sent one (plus up to 10% jitter), else exponential backoff with jitter, in
    [d / 2, d] for d = min(cap, base * 2 ** (attempt - 1))."""
    if retry_after is not None:
        return retry_after * (1.0 + 0.1 * rng.random())
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay * (0.5 + 0.5 * rng.random())


def parse_retry_after(headers: Any) -> float | None:
    """``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), as seconds."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class Invalid:
    """No valid answer after the retries; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass(frozen=True)
class Cached:
    """A verdict found in the cache after the job started (another job's answer)."""

    verdict: Any


@dataclass
class Request:
    key: str
    text: str


class OpenAIJudge:
    """GPT-4 (or any model behind an OpenAI-compatible endpoint) as judge; see the module doc."""

    name = "openai"

    def __init__(self, judge_cfg: JudgeConfig, cache_path: str | Path) -> None:
        self.cfg = judge_cfg
        self.model = judge_cfg.model
        self.template = TEMPLATES[judge_cfg.template]
        self.cache = JudgeCache(cache_path)
        env = judge_cfg.api_key_env
        self._api_key = os.environ.get(env)
        if not self._api_key:
            raise JudgeError(
                f"judge.type is 'openai' but the environment variable {env} (judge.api_key_env) is not set"
            )
        self._client = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rng = random.Random()  # jitter only: it never changes an answer
        self.calls = 0
        self.events: Counter[str] = Counter()

    @classmethod
    def from_config(cls, cfg: Any, cache_path: str | Path, judge_model: Any = None) -> OpenAIJudge:
        return cls(cfg.judge, cache_path)

    # ------------------------------------------------------------------ requests and keys

    def request(self, prompt: str, first: str, second: str) -> Request:
        text = self.template.text.format(prompt=prompt.strip(), first=first.strip(), second=second.strip())
        ident = [
            self.model,
            self.template.name,
            self.template.version,
            self.cfg.temperature,
            prompt.strip(),
            first.strip(),
            second.strip(),
        ]
        return Request(hashlib.sha256(json.dumps(ident).encode()).hexdigest(), text)

    def plan(self, comparison: Comparison) -> list[tuple[Request, bool]]:
        """The requests a comparison needs, each with whether the method's response is A."""
        if comparison.response.strip() == comparison.baseline.strip():
            return []
        forward = self.request(comparison.prompt, comparison.response, comparison.baseline)
        backward = self.request(comparison.prompt, comparison.baseline, comparison.response)
        if self.cfg.order == "both":
            return [(forward, True), (backward, False)]
        if order_is_forward(comparison.prompt.strip(), self.cfg.order_seed):
            return [(forward, True)]
        return [(backward, False)]

    # ------------------------------------------------------------------ judging

    def judge(self, comparisons: Sequence[Comparison]) -> list[float | None]:
        plans = [self.plan(c) for c in comparisons]
        unique = {req.key: req for plan in plans for req, _ in plan}
        needed = [req for key, req in unique.items() if key not in self.cache]
        self._announce(len(comparisons), sum(not p for p in plans), len(unique), needed)
        outcomes: dict[str, Any] = {key: self.cache[key] for key in unique if key in self.cache}
        outcomes.update(self._ask_all(needed))
        scores = [self._score(plan, outcomes) for plan in plans]
        self._report(outcomes)
        self.cache.close()
        return scores

    def compare(self, prompt: str, response: str, baseline: str) -> float | None:
        return self.judge([Comparison(prompt, response, baseline)])[0]

    def _score(self, plan: list[tuple[Request, bool]], outcomes: dict[str, Any]) -> float | None:
        if not plan:
            return 0.5  # identical responses
        verdicts = [outcomes[req.key] for req, _ in plan]
        if any(isinstance(v, Invalid) for v in verdicts):
            return None
        # P(the method's response preferred) in each order asked
        if self.template.weighted:
            wins = [v if forward else 1.0 - v for v, (_, forward) in zip(verdicts, plan, strict=True)]
            return float(sum(wins) / len(wins))
        wins = [(v == "A") == forward for v, (_, forward) in zip(verdicts, plan, strict=True)]
        if len(wins) == 1:
            return float(wins[0])
        return 1.0 if all(wins) else 0.0 if not any(wins) else 0.5  # inconsistent pair: a tie

    def _announce(self, n_comparisons: int, n_identical: int, n_requests: int, needed: list[Request]) -> None:
        tokens_in = sum(len(r.text) // CHARS_PER_TOKEN + 8 for r in needed)
        tokens_out = len(needed) * (1 if self.template.weighted else self.cfg.max_tokens or DPO_REPLY_TOKENS)
        cached = n_requests - len(needed)
        print(
            f"judge {self.model} (template {self.template.name}, order {self.cfg.order}): "
            f"{n_comparisons} comparisons, {n_identical} identical (ties, no call); "
            f"{n_requests} distinct requests, {cached} in the cache; "
            f"{len(needed)} calls still needed (before retries), "
            f"about {tokens_in:,} input + {tokens_out:,} output tokens (at ~{CHARS_PER_TOKEN} characters a token)",
            flush=True,
        )
        limit = self.cfg.max_calls
        if limit is not None and len(needed) > limit:
            raise JudgeError(
                f"judge.max_calls = {limit}, but {len(needed)} calls are still needed (after {cached} cached "
                "answers); nothing was sent. Raise judge.max_calls to go ahead."
            )

    def _ask_all(self, needed: list[Request]) -> dict[str, Any]:
        """Ask every request, ``judge.concurrency`` at a time; answers are cached as they come
        (flushed whenever no other answer is waiting, so a kill loses at most the last few)."""
        results: dict[str, Any] = {}
        if not needed:
            return results
        answers: queue.SimpleQueue = queue.SimpleQueue()

        def work(req: Request) -> None:
            try:
                answers.put((req, self._ask(req), None))
            except BaseException as err:  # noqa: BLE001 - handed to the main thread, which raises it
                answers.put((req, None, err))

        progress_every = max(1, len(needed) // 10)
        pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency, thread_name_prefix="judge")
        self.client  # noqa: B018 - made once here, shared by the worker threads
        try:
            for req in needed:
                pool.submit(work, req)
            for count in range(1, len(needed) + 1):
                req, outcome, error = answers.get()
                if error is not None:
                    self._stop.set()
                    raise error
                if isinstance(outcome, Cached):
                    outcome = outcome.verdict
                elif not isinstance(outcome, Invalid):
                    self.cache.add(req.key, outcome, flush=answers.empty())
                results[req.key] = outcome
                if count % progress_every == 0:
                    print(f"judge: {count}/{len(needed)} answered, {self.calls} requests sent", flush=True)
        finally:
            self.cache.flush()
            pool.shutdown(wait=True, cancel_futures=True)
        return results

    @property
    def client(self):
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(
                api_key=self._api_key, base_url=self.cfg.base_url, max_retries=0, timeout=self.cfg.timeout
            )
        return self._client

    def _count_call(self) -> None:
        with self._lock:
            limit = self.cfg.max_calls
            if limit is not None and self.calls >= limit:
                raise JudgeError(
                    f"judge.max_calls = {limit} requests sent (retries count); the answers so far are cached. "
                    "Raise judge.max_calls and rerun to finish."
                )
            self.calls += 1

    def _note(self, event: str) -> None:
        with self._lock:
            self.events[event] += 1

    def _ask(self, req: Request) -> Any:
        """The verdict for one request, after retries; or :class:`Invalid`; or a raised
        :class:`JudgeError` for a failure that no retry can fix."""
        found, verdict = self.cache.lookup_fresh(req.key)
        if found:  # answered meanwhile by a judging job running beside this one
            self._note("answered by a parallel job")
            return Cached(verdict)
        errors = unparsed = 0
        while True:
            if self._stop.is_set():
                raise JudgeError("judge: stopped after another request failed")
            self._count_call()
            try:
                verdict = self._call(req.text)
            except Exception as err:  # noqa: BLE001 - sorted into fatal, retried or rejected
                kind, retry_after = self._classify(err)
                self._note(kind)
                if kind == "rejected":
                    return Invalid(f"rejected: {self._redact(str(err))[:200]}")
                errors += 1
                if errors > self.cfg.max_retries:
                    return Invalid(f"{kind} after {errors} attempts")
                delay = retry_delay(errors, self.cfg.backoff_base, self.cfg.backoff_max, retry_after, self._rng)
                self._stop.wait(delay)
                continue
            if verdict is None:
                self._note("no_verdict")
                unparsed += 1
                if unparsed > self.cfg.parse_retries:
                    return Invalid(f"no verdict in {unparsed} replies")
                continue
            return verdict

    def _call(self, text: str) -> Any:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": text}],
            "temperature": self.cfg.temperature,
        }
        if self.template.weighted:
            kwargs.update(max_tokens=1, logprobs=True, top_logprobs=self.cfg.top_logprobs)
        elif self.cfg.max_tokens:
            kwargs["max_tokens"] = self.cfg.max_tokens
        # the client's own transport, auth, timeout and error types; the reply is read as plain JSON
        # rather than through the typed `chat.completions.create`, whose parameter and reply
        # models cost more CPU per request than the rest of the judge (see bench/judge.py)
        reply = self.client.post("/chat/completions", body=kwargs, cast_to=object)
        if isinstance(reply, str):  # the client's text of a reply not labelled JSON
            reply = _parsed_text_reply(reply)
        try:
            choice = reply["choices"][0]
            if self.template.weighted:
                first = choice["logprobs"]["content"][0]
                listed = [(t["token"], t["logprob"]) for t in first.get("top_logprobs") or []]
                return parse_weighted(listed or [(first["token"], first["logprob"])])
            content = choice["message"]["content"]
            if content is not None and not isinstance(content, str):
                raise TypeError(f"message content is {type(content).__name__}, not a string")
            return parse_choice(content or "")
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise MalformedReply(f"reply without the expected fields: {err!r}") from None

    def _classify(self, err: Exception) -> tuple[str, float | None]:
        """('retry kind', Retry-After) for a transient failure, ('rejected', None) for a request
        the server refuses for good; raise :class:`JudgeError` for a fatal one."""
        import openai

        where = f"judge.base_url = {self.cfg.base_url or 'https://api.openai.com/v1'}"
        if isinstance(err, NotAPIReply):  # a web page, not an API: no retry can fix the setting
            text = self._redact(str(err))
            shown = repr(text[:80]) + ("..." if len(text) > 80 else "")
            raise JudgeError(
                f"judge: {where} answered a chat-completion request with text that is not JSON ({shown}): "
                "check that judge.base_url is the API root (often ending in /v1)"
            ) from None
        status = getattr(err, "status_code", None)
        body = getattr(err, "body", None)
        code = body.get("code") if isinstance(body, dict) else None
        message = self._redact(str(err))
        lowered = message.lower()
        model_problem = code in ("model_not_found", "invalid_model") or (
            "model" in lowered
            and any(p in lowered for p in ("does not exist", "not found", "invalid model", "unknown model"))
        )
        if isinstance(err, openai.AuthenticationError):
            raise JudgeError(
                f"judge: {where} answered 401: the key in the environment variable {self.cfg.api_key_env} "
                f"(judge.api_key_env) was rejected. Set it to a valid key for this endpoint. ({message})"
            ) from None
        if isinstance(err, openai.PermissionDeniedError):
            raise JudgeError(
                f"judge: {where} answered 403: the key in {self.cfg.api_key_env} (judge.api_key_env) may not "
                f"use judge.model = {self.model!r}. ({message})"
            ) from None
        if isinstance(err, openai.NotFoundError):
            if model_problem:
                raise JudgeError(
                    f"judge: judge.model = {self.model!r} is not served by {where} (404). ({message})"
                ) from None
            raise JudgeError(
                f"judge: {where} answered 404: check that it is the API root (often ending in /v1). ({message})"
            ) from None
        if isinstance(err, openai.RateLimitError):
            if code == "insufficient_quota":
                raise JudgeError(
                    f"judge: the account behind {self.cfg.api_key_env} has no quota left at {where}. ({message})"
                ) from None
            return "429", parse_retry_after(err.response.headers)
        if isinstance(err, openai.BadRequestError):
            if model_problem:
                raise JudgeError(f"judge: {where} rejected judge.model = {self.model!r} (400). ({message})") from None
            return "rejected", None
        if isinstance(err, openai.APIStatusError):
            if status is not None and (status >= 500 or status in (408, 409)):
                return str(status), parse_retry_after(err.response.headers)
            return "rejected", None
        if isinstance(err, openai.APITimeoutError):
            return "timeout", None
        if isinstance(err, openai.APIConnectionError):
            return "connection", None
        if isinstance(err, (MalformedReply, ValueError, openai.APIResponseValidationError)):
            return "malformed", None  # json.JSONDecodeError is a ValueError
        raise err

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _report(self, outcomes: dict[str, Any]) -> None:
        invalid = Counter(o.reason for o in outcomes.values() if isinstance(o, Invalid))
        events = ", ".join(f"{k}: {v}" for k, v in sorted(self.events.items())) or "none"
        print(f"judge: {self.calls} requests sent; failures and retries by kind: {events}", flush=True)
        if invalid:
            print(
                f"judge: {sum(invalid.values())} requests without a valid answer: {dict(invalid)}",
                file=sys.stderr,
                flush=True,
            )
        if self.cache.skipped_lines:
            files = ", ".join(f"{path} ({n})" for path, n in sorted(self.cache.skipped.items()))
            print(
                f"judge: skipped {self.cache.skipped_lines} unreadable line(s) of the cache (torn by a kill, or "
                f"damaged; those comparisons are asked again): {files}",
                flush=True,
            )


def _parsed_text_reply(text: str) -> Any:
    """A reply body that the server did not label JSON: parsed if it is JSON anyway (a server
    with the wrong Content-Type), retried as malformed if empty (a proxy's hiccup), else
    :class:`NotAPIReply`."""
    if not text.strip():
        raise MalformedReply("an empty reply")
    try:
        return json.loads(text)
    except ValueError:
        raise NotAPIReply(text) from None


class MalformedReply(ValueError):
    """A reply that parsed as JSON but lacks the chat-completion fields, or an empty one: retried."""


class NotAPIReply(Exception):
    """A 200 reply whose body is not JSON (a web server's page at a wrong ``judge.base_url``)."""
