"""The transformers engine, for machines where vLLM cannot be installed: the base model
with PEFT LoRA adapters loaded side by side, switched per request group.

Each `complete` call queues one request; a batcher task collects what is queued (up to
`max_batch`), groups it by adapter and sampling, and runs one batched `generate` per
group in a worker thread, so the event loop keeps accepting requests while the model
works. Stop strings and the model's end-of-turn tokens end a sequence; the text after a
stop string is cut, as vLLM does. Same contract as every engine (engines/base.py).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from selflengthen.core import precision
from selflengthen.engines.base import (Completion, Request, Sampling, UsageMeter, check_adapter_folders, render_ids,
                                       token_ids)
from selflengthen.engines.vllm_engine import NO_ROOM


@dataclass
class _Pending:
    request: Request
    sampling: Sampling
    ids: list[int]
    future: asyncio.Future


class TransformersEngine:
    def __init__(self, model_path: str, adapters: dict[str, str], options: dict, end_of_turn: list[str],
                 per_request_seeds: bool = True):  # seeds: each request's, always (torch generators)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = precision.serving_dtype(options.get("dtype", "auto"), on_gpu=self.device == "cuda")
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
        if torch_dtype is None:
            torch_dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(model_path,
                                                       trust_remote_code=options.get("trust_remote_code", False))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype,
                                                     trust_remote_code=options.get("trust_remote_code", False))
        self.adapters = {name: str(path) for name, path in adapters.items()}
        if self.adapters:
            from peft import PeftModel

            names = sorted(self.adapters)
            check_adapter_folders(self.adapters)
            model = PeftModel.from_pretrained(model, self.adapters[names[0]], adapter_name=names[0])
            for name in names[1:]:
                model.load_adapter(self.adapters[name], adapter_name=name)
        self.model = model.to(self.device).eval()
        self.max_len = int(options.get("max_model_len") or getattr(model.config, "max_position_embeddings", 4096))
        self.max_batch = int(options.get("max_num_seqs") or 16)
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        self.eos_ids = sorted(set(token_ids(self.tokenizer, end_of_turn)) | set(eos))
        self.meter = UsageMeter(paths=dict(self.adapters))
        self.queue: asyncio.Queue[_Pending] | None = None
        self.batcher: asyncio.Task | None = None
        if options.get("seed") is not None:
            torch.manual_seed(int(options["seed"]))

    def usage(self) -> dict[str, dict]:
        return self.meter.snapshot()

    def render(self, request: Request) -> list[int]:
        return render_ids(self.tokenizer, request)

    async def complete(self, request: Request, sampling: Sampling) -> Completion:
        if request.adapter and request.adapter not in self.adapters:
            raise KeyError(f"adapter {request.adapter!r} is not loaded (loaded: {sorted(self.adapters)})")
        ids = self.render(request)
        if self.max_len - len(ids) < NO_ROOM:
            done = Completion("", prompt_tokens=len(ids), finish_reason="no_room")
            self.meter.record(request.adapter, done)
            return done
        if self.queue is None:  # bound to the event loop of the first call (the actor's)
            self.queue = asyncio.Queue()
            self.batcher = asyncio.get_running_loop().create_task(self._batch_forever())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(request, sampling, ids, future))
        done = await future
        self.meter.record(request.adapter, done, prompt=lambda: self.tokenizer.decode(ids))
        return done

    async def _batch_forever(self) -> None:
        while True:
            first = await self.queue.get()
            batch = [first]
            await asyncio.sleep(0)  # let the requests issued together arrive
            while not self.queue.empty() and len(batch) < self.max_batch:
                batch.append(self.queue.get_nowait())
            groups: dict[tuple, list[_Pending]] = {}
            for p in batch:
                groups.setdefault((p.request.adapter, p.sampling), []).append(p)
            for (adapter, sampling), group in groups.items():
                try:
                    results = await asyncio.to_thread(self._generate, adapter, sampling, group)
                except Exception as err:  # noqa: BLE001 - handed to each caller
                    for p in group:
                        if not p.future.done():
                            p.future.set_exception(err)
                    continue
                for p, result in zip(group, results):
                    if not p.future.done():
                        p.future.set_result(result)

    def _generate(self, adapter: str | None, sampling: Sampling, group: list[_Pending]) -> list[Completion]:
        torch = self.torch
        width = max(len(p.ids) for p in group)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p.ids)) + p.ids for p in group], device=self.device)
        attention = torch.tensor([[0] * (width - len(p.ids)) + [1] * len(p.ids) for p in group], device=self.device)
        max_new = max(1, min(sampling.max_tokens, self.max_len - width))
        if group[0].request.seed is not None:
            torch.manual_seed(group[0].request.seed)
        kwargs = dict(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new,
                      eos_token_id=self.eos_ids or None, pad_token_id=pad,
                      repetition_penalty=sampling.repetition_penalty)
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k if sampling.top_k > 0 else None)
        else:
            kwargs.update(do_sample=False)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            if adapter:
                self.model.set_adapter(adapter)
                out = self.model.generate(**kwargs)
            elif self.adapters:
                with self.model.disable_adapter():
                    out = self.model.generate(**kwargs)
            else:
                out = self.model.generate(**kwargs)
        results = []
        for p, row in zip(group, out[:, width:].tolist()):
            tokens = []
            for tid in row:
                if tid in self.eos_ids or tid == pad:
                    break
                tokens.append(tid)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            cut = min((i for s in sampling.stop if (i := text.find(s)) >= 0), default=-1)
            stopped = cut >= 0 or len(tokens) < len(row) or len(tokens) < max_new
            ender = row[len(tokens)] if len(tokens) < len(row) else None
            ended_by = ("stop_string" if cut >= 0 else "max_tokens" if not stopped
                        else self.tokenizer.convert_ids_to_tokens(ender) if ender in self.eos_ids else "")
            results.append(Completion(text[:cut] if cut >= 0 else text, prompt_tokens=len(p.ids),
                                      completion_tokens=len(tokens), finish_reason="stop" if stopped else "length",
                                      ended_by=ended_by))
        return results
