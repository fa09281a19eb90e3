"""Serving LoRA adapters as merged weights (`engine.lora_serving=merged`; `auto` picks it on
CPUs).

vLLM applies a LoRA adapter at every decoding step. On a GPU that costs little; on a CPU it
is most of the step for a small model (SmolLM2-135M generated a third of the tokens per
second with its two adapters loaded; scripts/bench_lora_serving.py measures it). Here each
adapter is merged into a copy of the base weights (PEFT's `merge_and_unload`) and served as
a plain model: the base model for requests without an adapter, one merged model per role.

One model is live at a time. A request for another model waits until the live model's
requests have finished, then the live replicas are shut down and restarted on the other
model (`engine.merged_swap=restart`, the default), or its weights are loaded into them in
place (`reload`: vLLM's `reload_weights`, under a second where a start takes 10-30 s on a
CPU; a replica that cannot reload is restarted instead). The loop's stages each use one
role, so that happens at stage boundaries, a few times an iteration. The requests that waited for a model, or came while it started, go
in together; the model with the most waiting requests goes next, so chains that alternate
between roles make progress, slowly. The merged copies live in a temporary folder removed
when serving ends.

Usage is reported per role, as with adapters, with the adapter's path and how many times
that model's engine was started (`starts`) and its weights reloaded into a live engine
(`reloads`); only merged serving reports them.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Callable

from selflengthen.core import scratch
from selflengthen.engines.base import (Completion, Engine, Request, Sampling, check_adapter_folders, merge_usage,
                                       usage_delta)

log = logging.getLogger("selflengthen")
BASE = "base"  # the usage name of requests without an adapter


def merge_adapter(base_model: str, adapter_dir: str, out_dir: str | Path, dtype: str = "auto",
                  trust_remote_code: bool = False) -> dict:
    """Merge a LoRA adapter into its base weights (PEFT `merge_and_unload`) and save a
    standalone model folder (weights in `dtype`, "auto": the base's; the base's tokenizer with
    its chat template; the generation config) that vLLM and transformers load without PEFT.
    Written beside `out_dir` first, then renamed into place. Returns what was made."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "half": torch.float16,
                   "float32": torch.float32, "float": torch.float32}.get(dtype, "auto")
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_model, trust_remote_code=trust_remote_code).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {"base_model": base_model, "adapter": adapter_dir, "path": str(out),
            "parameters": sum(p.numel() for p in merged.parameters()),
            "dtype": str(next(merged.parameters()).dtype).replace("torch.", ""),
            "seconds": round(time.time() - started, 1), "cuda": torch.cuda.is_available()}


async def on_daemon_thread(fn: Callable, *args):
    """`fn(*args)` on a thread of its own, awaited. A daemon thread, unlike asyncio.to_thread's
    executor: a run stopped (SIGTERM, Ctrl-C) while a model is being merged or started exits
    at once instead of waiting at interpreter exit for a call into a Ray that is gone."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(result, error) -> None:
        if not done.done():
            done.set_exception(error) if error is not None else done.set_result(result)

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as err:  # noqa: BLE001 - raised again on the caller's loop
            result, error = None, err
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the caller's loop is closed: nobody waits
            pass

    threading.Thread(target=work, name="selflengthen-merged-swap", daemon=True).start()
    return await done


class MergedPool:
    """The engine contract over one engine pool at a time, each serving one model: the base
    model (requests without an adapter) or an adapter merged into it. `open_pool(folder)`
    starts a pool (engines/replicas.py's EnginePool) on a model folder; `merge(role, out)`
    writes that role's merged model into `out` (merge_adapter: a dict with its "path").
    `reload_in_place`: swap models by the live pool's `reload(folder)` where it has one and
    it succeeds, else by a restart."""

    def __init__(self, base_path: str, adapters: dict[str, str], open_pool: Callable[[str], Engine],
                 merge: Callable[[str, Path], dict], reload_in_place: bool = True):
        check_adapter_folders(adapters)
        self.base_path, self.adapters = base_path, dict(adapters)
        self._open_pool, self._merge = open_pool, merge
        self._folder = scratch.folder("selflengthen-merged-")  # inside the command's: removed even if this pool is not
        self._merged: dict[str, str] = {}
        self._live: str | None = None  # the usage name of the model served now
        self._pool = None
        self._reload = reload_in_place
        self._served_before: dict[str, dict] = {}  # the live pool's usage when its model went live
        self._in_flight = 0
        self._waiting: Counter = Counter()
        self._admitted = 0  # requests for the live model let in although another model waits
        self._switching = False
        self._cond: asyncio.Condition | None = None  # made on the caller's event loop, at first use
        self._closed_usage: list[dict[str, dict]] = []
        self._state = threading.Lock()  # the live pool and the closed pools' usage: swapped on a worker thread
        self.starts: Counter = Counter()
        self.reloads: Counter = Counter()
        self._failed: dict[str, BaseException] = {}  # a model that could not start fails its later requests at once

    async def complete(self, request: Request, sampling: Sampling) -> Completion:
        name = request.adapter or BASE
        if request.adapter and request.adapter not in self.adapters:
            raise KeyError(f"adapter {request.adapter!r} is not loaded (loaded: {sorted(self.adapters)})")
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            self._waiting[name] += 1
            try:
                await self._cond.wait_for(lambda: self._may_enter(name))
            finally:
                self._waiting[name] -= 1
            if name in self._failed:
                raise self._failed[name]
            switch = self._switching = self._live != name
            if not switch:
                self._admitted = max(0, self._admitted - 1)
                self._in_flight += 1
                self._cond.notify_all()  # the others waiting for this model may enter too
        if switch:  # with the lock released, so that the requests arriving meanwhile are counted
            try:
                await on_daemon_thread(self._switch, name)
            except BaseException as err:
                self._failed[name] = err
                raise
            finally:
                async with self._cond:
                    self._switching = False
                    if self._live == name:
                        self._admitted = self._waiting[name]  # every request that came for it meanwhile
                        self._in_flight += 1
                    self._cond.notify_all()
        try:
            return await self._pool.complete(replace(request, adapter=None), sampling)
        finally:
            async with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def _may_enter(self, name: str) -> bool:
        if name in self._failed:
            return True  # to fail at once
        if self._switching:
            return False
        if self._in_flight:  # the live model serves those that waited for it, then more while no other model waits
            return self._live == name and (self._admitted > 0 or not any(n != name and c for n, c in self._waiting.items()))
        return name == self._next_model()

    def _next_model(self) -> str:
        """The model with the most waiting requests (the live one on a tie, then by name)."""
        waiting = [n for n, c in self._waiting.items() if c]
        return max(waiting, key=lambda n: (self._waiting[n], n == self._live, n), default=self._live or BASE)

    def _switch(self, name: str) -> None:
        """Make `name` the live model: its weights reloaded into the live pool, or the live
        pool shut down (keeping its usage) and `name`'s started."""
        folder = self.base_path if name == BASE else self._merged_folder(name)
        what = "the base model" if name == BASE else f"{name} as merged weights"
        t0 = time.time()
        if self._reload_live(name, folder):
            self.reloads[name] += 1
            log.info("serving %s (%s): weights reloaded in place in %.1f s", what, folder, time.time() - t0)
            return
        self._close_pool()
        pool = self._open_pool(folder)
        with self._state:
            self._pool, self._live, self._served_before = pool, name, {}
        self.starts[name] += 1
        log.info("serving %s (%s): engine started in %.0f s", what, folder, time.time() - t0)

    def _reload_live(self, name: str, folder: str) -> bool:
        """Whether the live pool now serves `folder`, reloaded in place. A pool that cannot, or
        fails to, is restarted instead, here and at every later swap."""
        reload = getattr(self._pool, "reload", None)
        if not self._reload or reload is None:
            return False
        try:
            served = self._pool.usage()
            if not reload(folder):
                self._reload = False
                return False
        except Exception as err:  # noqa: BLE001 - a restart loads the model from scratch instead
            self._reload = False
            reason = (str(err).strip().splitlines() or [repr(err)])[-1][:200]
            log.warning("could not reload the engine's weights in place (%s); restarting it at each swap instead "
                        "(engine.merged_swap=restart does so from the start)", reason)
            return False
        with self._state:
            self._closed_usage.append(self._named_usage(self._live, usage_delta(self._served_before, served)))
            self._served_before, self._live = served, name
        return True

    def _merged_folder(self, role: str) -> str:
        if role not in self._merged:
            t0 = time.time()
            self._merged[role] = str(self._merge(role, self._folder / role)["path"])
            log.info("merged adapter %s (%s) into the base weights in %.0f s", role, self.adapters[role],
                     time.time() - t0)
        return self._merged[role]

    def _close_pool(self) -> None:
        with self._state:  # usage() never sees this pool's requests both closed and live
            pool, self._pool = self._pool, None
            if pool is not None:
                try:
                    served = pool.usage()
                except Exception as err:  # noqa: BLE001 - a pool that failed a reload: shut it down anyway
                    log.warning("the usage of %s's engine was lost: %s", self._live, err)
                    served = self._served_before
                self._closed_usage.append(self._named_usage(self._live, usage_delta(self._served_before, served)))
            self._live = None
        if pool is not None:
            pool.shutdown()

    def _named_usage(self, name: str, usage: dict[str, dict]) -> dict[str, dict]:
        """A pool's usage (all of it under "base": it serves no adapter) under the role's name."""
        entry = merge_usage([{name: info} for info in usage.values()]).get(name, {})
        return {name: {**entry, "path": self.adapters.get(name)}} if entry else {}

    def usage(self) -> dict[str, dict]:
        """Requests and tokens served per role (and the adapter's path), over every start."""
        with self._state:
            parts = list(self._closed_usage)
            if self._pool is not None:
                parts.append(self._named_usage(self._live, usage_delta(self._served_before, self._pool.usage())))
        total = merge_usage(parts)
        for key, counts in (("starts", self.starts), ("reloads", self.reloads)):
            for name, count in counts.items():
                total.setdefault(name, {"path": self.adapters.get(name)})[key] = count
        return total

    def shutdown(self) -> None:
        try:
            self._close_pool()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)
