"""Ray itself: connecting to (or starting) the cluster and reading its resources. The
driver runs the loop; generation runs in engine replicas (engines/replicas.py), and
fine-tuning runs as Ray tasks, one per adapter. Resource requests use GPUs where the
cluster has them, CPUs otherwise, so the same code runs on a laptop (a local Ray
instance) and on a cluster (`ray.address`).
"""
from __future__ import annotations

import os

import ray


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


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
