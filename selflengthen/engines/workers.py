"""Ray itself: connecting to (or starting) the cluster and reading its resources. The
driver runs the loop; generation runs in engine replicas (engines/replicas.py), and
fine-tuning runs as Ray tasks, one per adapter. Resource requests use GPUs where the
cluster has them, CPUs otherwise, so the same code runs on a laptop (a local Ray
instance) and on a cluster (`ray.address`).
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import ray

from selflengthen.config import schema
from selflengthen.core import suggested
from selflengthen.core.errors import Terminated, UserError, sigterm_stops_like_ctrl_c
from selflengthen.engines import cleanup


def thread_cap() -> int | None:
    """OMP_NUM_THREADS where it is set in this (the driver's) environment: the standard way to
    tell a process tree how many threads each of its CPU-bound members may run (HPC shells
    often set it; the test suite's parallel workers set 1 so that two runs sharing the cores
    never oversubscribe them, which stalls OpenMP). None when unset or not a number."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def task_threads(granted: float) -> int:
    """Torch threads of a CPU task granted `granted` CPUs by Ray: the grant, capped by
    thread_cap()."""
    cap = thread_cap()
    return max(1, min(int(granted), cap) if cap else int(granted))


def with_cpu_threads(tcfg: dict) -> dict:
    """A training config (train.* as a dict) with its torch threads decided: train.cpu_threads
    when set, else task_threads(train.num_cpus). Returns the same dict."""
    tcfg["cpu_threads"] = tcfg.get("cpu_threads") or task_threads(tcfg["num_cpus"])
    return tcfg


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def ray_address_file() -> Path:
    """Where `ray start` on this node records its cluster's address (Ray's own rule:
    $RAY_TMPDIR, else $TMPDIR, else /tmp, then ray/ray_current_cluster)."""
    tmp = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    tmp = tmp or "/tmp"
    return Path(tmp) / "ray" / "ray_current_cluster"


def resolve_address(address: str) -> tuple[str, str]:
    """(the address to connect to, how it is named in messages). "auto" is resolved as Ray
    does it, from RAY_ADDRESS or the file `ray start` writes, but never falls back to Ray's
    legacy guess (any Ray process found on this node: another user's local instance); with
    neither, it is a one-line error at once instead of Ray's own attempt."""
    if address != "auto":
        return address, f"ray.address={address}"
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        return env, f"ray.address=auto ({env}, from RAY_ADDRESS)"
    found = ray_address_file()
    text = found.read_text(encoding="utf-8", errors="replace").strip() if found.is_file() else ""
    if not text:
        raise UserError(f"ray.address=auto found no running Ray cluster: RAY_ADDRESS is unset and {found} does not "
                        f"exist (`{suggested.RAY_START_HEAD}` writes it); start the cluster on this node ({suggested.RAY_START_HEAD}), "
                        "give its address (ray.address=HOST:6379 or ray://HOST:10001), or set ray.address=null "
                        "for a local instance")
    return text, f"ray.address=auto ({text}, from {found})"


def check_reachable(address: str, timeout_s: float) -> str:
    """The address to give ray.init (resolve_address); fail within `timeout_s` when its
    host:port does not accept a connection (ray.init itself retries for minutes)."""
    address, named = resolve_address(address)
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return address
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise UserError(f"cannot reach the Ray cluster at {named} within "
                        f"ray.connect_timeout_s={timeout_s:g} s ({reason}); start it there ({suggested.RAY_START_HEAD}), "
                        "fix the address, or set ray.address=null for a local instance") from err
    return address


def gcs_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the connected Ray cluster's GCS accepts a connection: calls that go through it
    (removing a placement group) wait 60 s for a GCS that is gone, then abort the process."""
    try:
        host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except Exception:  # noqa: BLE001 - not connected, no address, refused, timed out
        return False
    return True


def init_ray(ray_cfg: schema.Ray) -> None:
    """Connect to `ray.address`, or start a local instance sized by `ray.num_cpus` (its
    dashboard off unless `ray.dashboard`, and then bound to 127.0.0.1)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    cleanup.claim_scratch()
    if ray_cfg.address:
        address = check_reachable(ray_cfg.address, ray_cfg.connect_timeout_s)
        try:
            with _stop_as_terminated():
                ray.init(address=address, log_to_driver=ray_cfg.log_to_driver)
        except (ConnectionError, RuntimeError, TimeoutError) as err:
            raise UserError(f"cannot connect to the Ray cluster at ray.address={ray_cfg.address}: "
                            f"{str(err).strip().splitlines()[0][:200]}; start it ({suggested.RAY_START_HEAD}) or set "
                            "ray.address=null for a local instance") from err
    else:
        # the dashboard serves the cluster's jobs and logs without authentication: off, or on loopback only
        dashboard = ray_cfg.dashboard
        cleanup.mark_local_ray()  # Ray's processes carry our token: none outlives the command
        # a worker Ray kills for memory is not retried (Ray retries such tasks without end: two
        # GRPO trainers killed at ~9 GiB each restarted from scratch, again and again, in silence);
        # the command stops with one line and the same command resumes from what is kept
        os.environ.setdefault("RAY_task_oom_retries", "0")
        with _stop_as_terminated():
            ray.init(num_cpus=ray_cfg.num_cpus, include_dashboard=dashboard,
                     **({"dashboard_host": "127.0.0.1"} if dashboard else {}),
                     log_to_driver=ray_cfg.log_to_driver, configure_logging=False)
    cleanup.release_first()  # at exit, before Ray's own shutdown: a stop during it is brief, not a traceback
    sigterm_stops_like_ctrl_c()  # ray.init replaced it: SIGTERM would abort and leave Ray's agents running


@contextmanager
def _stop_as_terminated():
    """While ray.init runs, SIGTERM goes to Ray's handler, which exits with code 15: a stop
    like any other (one line, exit 143)."""
    try:
        yield
    except SystemExit as err:
        if err.code == signal.SIGTERM:
            raise Terminated() from None
        raise
