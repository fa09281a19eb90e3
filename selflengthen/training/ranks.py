"""This process's place among the workers training one adapter: its rank and the world
size in the torch.distributed group (Ray Train sets it up; a single process has none),
collectives that are no-ops alone, and what each rank fed its model."""
from __future__ import annotations


def batch_counter(model):
    """Count the micro-batches, sequences and tokens this process feeds the model (a forward
    pre-hook): with several workers each sees its own share of the data."""
    seen = {"micro_batches": 0, "sequences": 0, "tokens": 0}

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and module.training:
            seen["micro_batches"] += 1
            seen["sequences"] += int(ids.shape[0])
            mask = kwargs.get("attention_mask")
            seen["tokens"] += int(mask.sum()) if mask is not None else int(ids.numel())

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process in the torch.distributed group, (0, 1) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(obj) -> list:
    """obj from every rank, in rank order (a collective: every rank calls it)."""
    import torch.distributed as dist

    _, world = rank_and_world()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    import torch.distributed as dist

    _, world = rank_and_world()
    if world > 1:
        dist.barrier()

