"""The OpenAI-compatible engine: the engine contract over HTTP, for a model someone else
serves (vLLM's OpenAI server, SGLang, a hosted API).

- A plain chat turn (empty prefix) goes to `/v1/chat/completions`: the server renders the
  chat template and knows its end of turn.
- A prefilled assistant turn (non-empty prefix) is rendered here, with the model's own
  tokenizer and chat template, and sent to `/v1/completions` as token ids, so that the
  server adds no second BOS and the prefix is continued exactly as the offline engine
  continues it. The model's end-of-turn strings join the request's stops there.
- LoRA adapters are addressed by model name: role -> served name (`adapter_models`),
  optionally registered at start through vLLM's `/v1/load_lora_adapter` under a name that
  carries a hash of the adapter, so a retrained adapter is never mistaken for the old one
  (vLLM caches adapters by name).

Retries (timeouts, connection errors, 408/409/429/5xx, exponential backoff with jitter,
`Retry-After` honoured) are the `openai` client's own; an asyncio semaphore bounds the
requests in flight. What still fails after the retries becomes one `UserError` line that
names the server and what to check. The API key is read from the environment variable
named in the config and appears in no log, artifact, saved config or error message.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai

from selflengthen.config import schema
from selflengthen.core.errors import UserError
from selflengthen.engines.base import Completion, Request, Sampling, UsageMeter, render_ids, token_ids

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "EMPTY"  # what local servers (vLLM, SGLang) accept when they check no key
MIN_ROOM = 16  # fewer free context tokens than this: answer "no_room", as the offline engine does


def adapter_fingerprint(path: str | Path) -> str:
    """A short hash of an adapter's location and, where it is readable here, its files:
    a retrained adapter (new weights, same folder) gets a new served name."""
    path = Path(path)
    digest = hashlib.sha256(str(path.expanduser().resolve()).encode())
    if path.is_dir():
        for file in sorted(p for p in path.iterdir() if p.is_file() and p.name.startswith("adapter_")):
            digest.update(file.name.encode())
            with file.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:10]


MAX_STOPS = 4  # OpenAI's API (and vLLM's server, which validates like it) takes at most 4 stop strings


def cut_at_stops(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text up to the earliest of the stops the server was not given (beyond
    MAX_STOPS), without the stop itself, as the server does with its own; (text, cut?)."""
    ends = [i for i in (text.find(s) for s in stops[MAX_STOPS:] if s) if i >= 0]
    return (text[:min(ends)], True) if ends else (text, False)


class OpenAIEngine:
    """`complete(request, sampling) -> Completion` against an OpenAI-compatible server."""

    def __init__(self, base_url: str, model: str, adapters: dict[str, str], end_of_turn: list[str], *,
                 tokenizer: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 adapter_models: dict[str, str] | None = None, max_concurrency: int = 64, timeout: float = 600,
                 max_retries: int = 5, send_extra_sampling: bool = True, load_adapters: bool = False,
                 per_request_seeds: bool = True, ready_timeout: float = 120):
        assert max_concurrency >= 1 and timeout > 0 and max_retries >= 0
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.adapters = {role: str(path) for role, path in adapters.items()}
        self.end_of_turn = list(end_of_turn)
        self.tokenizer_path = tokenizer or model
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.send_extra_sampling = send_extra_sampling
        self.load_adapters = load_adapters
        self.per_request_seeds = per_request_seeds
        self.ready_timeout = float(ready_timeout)
        names = dict(adapter_models or {})
        self.adapter_models = {role: names.get(role) or role for role in self.adapters}
        if load_adapters:  # vLLM caches by name: the name carries the weights' fingerprint
            self.adapter_models = {role: f"{name}-{adapter_fingerprint(self.adapters[role])}"
                                   for role, name in self.adapter_models.items()}
        self.max_model_len: int | None = None  # from /v1/models where the server reports it
        self.meter = UsageMeter(paths={"base": None, **self.adapters})
        self._tokenizer = None
        self._end_of_turn_ids: list[int] | None = None
        self._tokenizer_lock = threading.Lock()
        # the client and the semaphore belong to one event loop; a new loop gets new ones
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = None
        self._semaphore: asyncio.Semaphore | None = None

    @classmethod
    def from_config(cls, engine: schema.OpenaiEngine | schema.OpenaiJudge, model_path: str,
                    adapters: dict[str, str], end_of_turn: list[str]) -> "OpenAIEngine":
        """From the `engine` group (conf/engine/openai.yaml) or an OpenAI judge; null
        model/tokenizer = the model path the loop resolved."""
        return cls(engine.base_url, engine.model or model_path, adapters, list(end_of_turn),
                   tokenizer=engine.tokenizer or model_path, api_key_env=engine.api_key_env,
                   adapter_models=dict(engine.adapter_models), max_concurrency=engine.max_concurrency,
                   timeout=engine.timeout, max_retries=engine.max_retries,
                   send_extra_sampling=engine.send_extra_sampling, load_adapters=engine.load_adapters,
                   per_request_seeds=engine.per_request_seeds, ready_timeout=engine.ready_timeout)

    def __repr__(self) -> str:  # never the key
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.model!r}, adapters={self.adapter_models!r})"

    # -- the contract -------------------------------------------------------------------

    async def complete(self, request: Request, sampling: Sampling) -> Completion:
        model = self.served_name(request.adapter)
        ids = self.render(request) if request.prefix else None
        client, semaphore = self._session()
        async with semaphore:
            try:
                if ids is None:
                    completion = await self._chat(client, model, request, sampling)
                else:
                    completion = await self._raw(client, model, ids, request, sampling)
            except openai.APIError as err:
                completion = self._no_room_or_raise(err, model)
        self.meter.record(request.adapter, completion)
        return completion

    def usage(self) -> dict[str, dict]:
        return self.meter.snapshot()

    def served_name(self, adapter: str | None) -> str:
        if adapter is None:
            return self.model
        if adapter not in self.adapter_models:
            raise KeyError(f"adapter {adapter!r} is not configured (configured: {sorted(self.adapter_models)})")
        return self.adapter_models[adapter]

    def render(self, request: Request) -> list[int]:
        """The chat template up to the assistant turn, plus the prefix, as token ids."""
        return render_ids(self.tokenizer(), request)

    def tokenizer(self):
        with self._tokenizer_lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
                except Exception as err:  # noqa: BLE001 - any load failure is the user's path
                    raise UserError(
                        f"cannot load the tokenizer from {self.tokenizer_path!r} ({type(err).__name__}): prefilled "
                        "requests render the chat template locally; set engine.tokenizer to a folder or hub id "
                        "with the served model's tokenizer") from None
            return self._tokenizer

    # -- start, check, close ------------------------------------------------------------

    async def start(self) -> None:
        """Wait (at most `ready_timeout` s) until the server answers `/v1/models`, register
        the adapters if configured to, and check that every name we will ask for is served;
        otherwise one clear line. Idempotent: an adapter already served is not loaded again."""
        served = await self._wait_ready()
        if self.load_adapters:
            await self._load_adapters(served)
            served = await self._wait_ready()
        ids = {m["id"] for m in served}
        for m in served:
            if m["id"] == self.model and isinstance(m.get("max_model_len"), int):
                self.max_model_len = m["max_model_len"]
        missing = [name for name in (self.model, *self.adapter_models.values()) if name not in ids]
        if missing:
            raise UserError(
                f"the server at {self.base_url} does not serve {', '.join(map(repr, missing))} (it serves "
                f"{', '.join(sorted(ids)) or 'nothing'}): check engine.model and engine.adapter_models, or serve the "
                "adapters (vLLM: --enable-lora --lora-modules NAME=PATH, or engine.load_adapters=true)")

    check = start  # the same bounded check, under the name the callers use

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = self._semaphore = self._loop = None

    async def __aenter__(self) -> "OpenAIEngine":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # -- internals ----------------------------------------------------------------------

    def _session(self):
        """The client and semaphore of the running event loop (asyncio objects must not
        cross loops: a script calling `run_batch` twice runs two loops)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            from openai import AsyncOpenAI, Timeout

            self._client = AsyncOpenAI(base_url=self.base_url, api_key=self._api_key(),
                                       timeout=Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                                       max_retries=self.max_retries)
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._client, self._semaphore

    def _api_key(self) -> str:
        return os.environ.get(self.api_key_env) or PLACEHOLDER_KEY

    def _sampling_args(self, sampling: Sampling, request: Request, stop: list[str]) -> dict[str, Any]:
        args: dict[str, Any] = {"temperature": sampling.temperature, "top_p": sampling.top_p,
                                "max_tokens": sampling.max_tokens}
        if stop:  # the API takes at most MAX_STOPS; the rest are cut here (cut_at_stops)
            args["stop"] = stop[:MAX_STOPS]
        if request.seed is not None and self.per_request_seeds:
            args["seed"] = request.seed
        if self.send_extra_sampling:  # vLLM and SGLang take these; strict hosted APIs reject them
            args["extra_body"] = {"top_k": sampling.top_k, "repetition_penalty": sampling.repetition_penalty}
        return args

    async def _chat(self, client, model: str, request: Request, sampling: Sampling) -> Completion:
        response = await client.chat.completions.create(
            model=model, messages=request.messages, **self._sampling_args(sampling, request, list(sampling.stop)))
        choice = response.choices[0]
        text, cut = cut_at_stops(choice.message.content or "", list(sampling.stop))
        return self._completion(text, "stop" if cut else choice.finish_reason, response.usage, 0)

    async def _raw(self, client, model: str, ids: list[int], request: Request, sampling: Sampling) -> Completion:
        if self.max_model_len is not None:
            room = self.max_model_len - len(ids)
            if room < MIN_ROOM:
                return Completion("", len(ids), 0, "no_room")
            sampling = sampling.with_max_tokens(min(sampling.max_tokens, room))
        # The end of turn as text and, where the server takes them, as token ids: vLLM
        # matches stop strings against text without special tokens, so "<|im_end|>" as a
        # string alone would not stop a model whose EOS is another token.
        stops = list(dict.fromkeys((*sampling.stop, *self.end_of_turn)))
        args = self._sampling_args(sampling, request, stops)
        if self.send_extra_sampling and self.end_of_turn_ids():
            args["extra_body"]["stop_token_ids"] = self.end_of_turn_ids()
        try:
            response = await client.completions.create(model=model, prompt=ids, **args)
        except openai.BadRequestError as err:
            if self._is_context_overflow(err):
                return Completion("", len(ids), 0, "no_room")
            raise
        choice = response.choices[0]
        text, cut = cut_at_stops(choice.text or "", stops)
        return self._completion(text, "stop" if cut else choice.finish_reason, response.usage, len(ids))

    def end_of_turn_ids(self) -> list[int]:
        if self._end_of_turn_ids is None:
            self._end_of_turn_ids = token_ids(self.tokenizer(), self.end_of_turn)
        return self._end_of_turn_ids

    @staticmethod
    def _completion(text: str, finish_reason: str | None, usage, prompt_len: int) -> Completion:
        return Completion(text,
                          prompt_tokens=usage.prompt_tokens if usage else prompt_len,
                          completion_tokens=usage.completion_tokens if usage else 0,
                          finish_reason="length" if finish_reason == "length" else "stop")

    def _no_room_or_raise(self, err: openai.APIError, model: str) -> Completion:
        """A prompt longer than the context is the sample's problem, not the run's: answer
        "no_room" as the offline engine does. Anything else is one UserError line."""
        if self._is_context_overflow(err):
            return Completion("", 0, 0, "no_room")
        raise self._user_error(err, model) from None

    def _is_context_overflow(self, err: openai.APIError) -> bool:
        # vLLM: "... exceeds model's maximum context length"; OpenAI: "maximum context length is"
        return isinstance(err, openai.BadRequestError) and "context length" in self._server_message(err).lower()

    def _user_error(self, err: openai.APIError, model: str) -> UserError:
        where, tries = f"the OpenAI-compatible server at {self.base_url}", f"after {self.max_retries} retries"
        if isinstance(err, openai.APITimeoutError):
            msg = (f"{where} did not answer within {self.timeout:g} s {tries}: check that it is up and not "
                   "overloaded, or raise engine.timeout / lower engine.max_concurrency")
        elif isinstance(err, openai.APIConnectionError):
            msg = (f"cannot connect to {where} ({tries}): check that the server is running and that "
                   "engine.base_url is right")
        elif isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
            msg = (f"{where} refused the API key (HTTP {err.status_code}): set the environment variable "
                   f"{self.api_key_env} (named by engine.api_key_env) to a valid key")
        elif isinstance(err, openai.NotFoundError):
            msg = (f"{where} does not serve model {model!r} (HTTP 404: {self._server_message(err)}): check "
                   "engine.model and engine.adapter_models against its /v1/models")
        elif isinstance(err, openai.APIStatusError) and (err.status_code == 429 or err.status_code >= 500):
            msg = (f"{where} kept failing (HTTP {err.status_code}: {self._server_message(err)}) {tries}: check "
                   "its log and load")
        elif isinstance(err, openai.APIStatusError):
            msg = (f"{where} rejected a request (HTTP {err.status_code}: {self._server_message(err)}); if it "
                   "rejects top_k or repetition_penalty, set engine.send_extra_sampling=false")
        else:  # an answer the client could not read
            msg = f"{where} gave an answer the client cannot read ({type(err).__name__}: {self._server_message(err)})"
        return UserError(self._redact(msg))

    @staticmethod
    def _server_message(err) -> str:
        body = getattr(err, "body", None)
        message = None
        if isinstance(body, dict):
            inner = body.get("error", body)
            message = inner.get("message") if isinstance(inner, dict) else inner
            message = message or body.get("message") or body.get("detail")
        text = " ".join(str(message or getattr(err, "message", "") or type(err).__name__).split())
        return text[:300] + ("..." if len(text) > 300 else "")

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key and len(key) >= 4 else text

    async def _list_models(self, budget: float) -> list[dict]:
        client, _ = self._session()
        page = await client.with_options(timeout=max(1.0, min(budget, 30.0)), max_retries=0).models.list()
        return [m.model_dump() for m in page.data]

    async def _wait_ready(self) -> list[dict]:
        """Poll /v1/models until it answers (a vLLM server takes ~40 s to start), at most
        `ready_timeout` seconds; a refused or failing server after that is one line."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                return await self._list_models(deadline - time.monotonic())
            except (openai.APIConnectionError, openai.InternalServerError) as err:
                if time.monotonic() + 1.0 >= deadline:
                    raise UserError(self._redact(
                        f"the OpenAI-compatible server at {self.base_url} did not answer /v1/models within "
                        f"{self.ready_timeout:g} s ({type(err).__name__}): check that it is running and that "
                        "engine.base_url is right (engine.ready_timeout bounds the wait)")) from None
                await asyncio.sleep(1.0)
            except openai.APIError as err:
                raise self._user_error(err, self.model) from None

    async def _load_adapters(self, served: list[dict]) -> None:
        """vLLM's runtime LoRA loading (the server runs with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."""
        client, _ = self._session()
        client = client.with_options(max_retries=min(self.max_retries, 2))
        ids = {m["id"] for m in served}
        for role, name in self.adapter_models.items():
            if name in ids:  # this very adapter (same fingerprint) is loaded already
                continue
            try:
                await client.post("/load_lora_adapter", cast_to=str,
                                  body={"lora_name": name, "lora_path": self.adapters[role]})
            except openai.NotFoundError:
                raise UserError(
                    f"the server at {self.base_url} has no /v1/load_lora_adapter: start vLLM with --enable-lora and "
                    "the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or set "
                    "engine.load_adapters=false and serve the adapters with --lora-modules") from None
            except openai.APIStatusError as err:
                if "already been loaded" in self._server_message(err):
                    continue
                raise UserError(self._redact(
                    f"the server at {self.base_url} could not load adapter {role!r} from {self.adapters[role]} "
                    f"(HTTP {err.status_code}: {self._server_message(err)}): the path must be readable by the "
                    "server, and the adapter's rank within the server's --max-lora-rank")) from None
            except openai.APIError as err:
                raise self._user_error(err, name) from None
            log.info("loaded adapter %s as %r on %s", role, name, self.base_url)


@asynccontextmanager
async def opened(model_path: str, adapters: dict[str, str], model: schema.Model,
                 engine: schema.OpenaiEngine | schema.OpenaiJudge, ray_settings: schema.Ray):
    """engine=openai: the client of a server elsewhere, checked at start, closed on exit
    (Ray is not needed: the server owns its resources)."""
    client = OpenAIEngine.from_config(engine, model_path, adapters, model.end_of_turn)
    try:
        await client.check()
        yield client
    finally:
        await client.aclose()
