"""Ray placement of the heavy work. The driver runs the loop; generation runs in
`EngineWorker` actors (data-parallel replicas, each one vLLM engine) behind an
`EnginePool` that shards each batch across them; fine-tuning runs as Ray tasks, one per
adapter. Resource requests use GPUs where the cluster has them, CPUs otherwise, so the
same code runs on a laptop (a local Ray instance) and on a cluster (`ray.address`).
"""
from __future__ import annotations

import os

import ray

from selflengthen.engines import Request, Sampling


@ray.remote
class EngineWorker:
    """One vLLM engine (one replica) inside a Ray actor."""

    def __init__(self, model_path: str, adapters: dict[str, str], options: dict, end_of_turn: list[str],
                 per_request_seeds: bool):
        from selflengthen.engines.vllm_engine import VllmEngine

        self.engine = VllmEngine(model_path, adapters, options, end_of_turn, per_request_seeds)

    def ready(self) -> bool:
        return True

    def generate(self, requests: list[Request], sampling: Sampling) -> list[str]:
        return self.engine.generate(requests, sampling)

    def usage(self) -> dict[str, dict]:
        return self.engine.usage()


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


class EnginePool:
    """The engine the stages see: a batch is interleaved across the replicas (so long and
    short requests spread evenly), generated in parallel and put back in order."""

    def __init__(self, model_path: str, adapters: dict[str, str], engine_cfg, model_cfg):
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        tp = int(engine_cfg.tensor_parallel_size)
        if engine_cfg.replicas == "auto":
            replicas = max(1, gpus // tp) if gpus else 1
        else:
            replicas = int(engine_cfg.replicas)
        options = {
            "max_model_len": int(model_cfg.max_model_len),
            "dtype": model_cfg.dtype,
            "seed": int(engine_cfg.seed),
            "tensor_parallel_size": tp,
            "enforce_eager": bool(engine_cfg.enforce_eager) if gpus else True,
            "gpu_memory_utilization": float(engine_cfg.gpu_memory_utilization if gpus
                                            else engine_cfg.cpu_memory_utilization),
            "max_lora_rank": int(engine_cfg.max_lora_rank),
            "trust_remote_code": bool(model_cfg.trust_remote_code),
            "max_num_seqs": int(engine_cfg.max_num_seqs),
        }
        # never ask for more CPUs than the cluster has: Ray would wait forever
        cpus = min(float(engine_cfg.num_cpus_per_replica), float(resources.get("CPU", 1)))
        per_request_seeds = bool(engine_cfg.per_request_seeds)
        actor = EngineWorker.options(num_gpus=tp if gpus else 0, num_cpus=cpus)
        self.replicas = replicas
        self.workers = [actor.remote(model_path, adapters, options, list(model_cfg.end_of_turn), per_request_seeds)
                        for _ in range(replicas)]
        try:
            ray.get([w.ready.remote() for w in self.workers])
        except Exception:
            self.shutdown()
            raise

    def generate(self, requests: list[Request], sampling: Sampling) -> list[str]:
        n = len(self.workers)
        shards = [requests[i::n] for i in range(n)]
        results = ray.get([w.generate.remote(s, sampling) for w, s in zip(self.workers, shards) if s])
        out: list[str] = [""] * len(requests)
        for i, texts in enumerate(results):
            out[i::n] = texts
        return out

    def usage(self) -> dict[str, dict]:
        """Requests served per adapter (and its path), summed over the replicas."""
        total: dict[str, dict] = {}
        for part in ray.get([w.usage.remote() for w in self.workers]):
            for name, info in part.items():
                entry = total.setdefault(name, {"path": info["path"], "requests": 0})
                entry["requests"] += info["requests"]
        return total

    def shutdown(self) -> None:
        """Kill the actors: frees the accelerator memory before training starts."""
        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []

    def __enter__(self) -> "EnginePool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def init_ray(ray_cfg) -> None:
    """Connect to `ray.address`, or start a local instance sized by `ray.num_cpus`."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if ray_cfg.address:
        ray.init(address=ray_cfg.address, log_to_driver=bool(ray_cfg.log_to_driver))
    else:
        ray.init(num_cpus=ray_cfg.num_cpus, include_dashboard=False,
                 log_to_driver=bool(ray_cfg.log_to_driver), configure_logging=False)
