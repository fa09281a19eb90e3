"""Ray itself: connecting to (or starting) the cluster and reading its resources. The
driver runs the loop; generation runs in engine replicas (engines/replicas.py), and
fine-tuning runs as Ray tasks, one per adapter. Resource requests use GPUs where the
cluster has them, CPUs otherwise, so the same code runs on a laptop (a local Ray
instance) and on a cluster (`ray.address`).
"""
from __future__ import annotations

import os
import socket

import ray

from selflengthen.errors import UserError


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def check_reachable(address: str, timeout_s: float) -> None:
    """Fail within `timeout_s` when a host:port (or ray://host:port) address does not accept
    a connection (ray.init itself retries for minutes); "auto" is left to Ray."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise UserError(f"cannot reach the Ray cluster at ray.address={address} within "
                        f"ray.connect_timeout_s={timeout_s:g} s ({reason}); start it there (ray start --head), "
                        "fix the address, or set ray.address=null for a local instance") from err


def init_ray(ray_cfg) -> None:
    """Connect to `ray.address`, or start a local instance sized by `ray.num_cpus`."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if ray_cfg.address:
        check_reachable(str(ray_cfg.address), float(ray_cfg.connect_timeout_s))
        try:
            ray.init(address=ray_cfg.address, log_to_driver=bool(ray_cfg.log_to_driver))
        except (ConnectionError, RuntimeError, TimeoutError) as err:
            raise UserError(f"cannot connect to the Ray cluster at ray.address={ray_cfg.address}: "
                            f"{str(err).strip().splitlines()[0][:200]}; start it (ray start --head) or set "
                            "ray.address=null for a local instance") from err
    else:
        ray.init(num_cpus=ray_cfg.num_cpus, include_dashboard=False,
                 log_to_driver=bool(ray_cfg.log_to_driver), configure_logging=False)
