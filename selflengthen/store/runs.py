"""What a run's earlier iterations hand to the next step: the instruction pool (the seeds plus
every accepted instruction) and the adapters of the iteration before. The loop and the
finalize verb read them here."""
from __future__ import annotations

from selflengthen.store import artifacts


def instruction_pool(seeds: dict[str, list[str]], paths: artifacts.RunPaths, upto: int) -> dict[str, list[str]]:
    """Seeds plus every instruction accepted in iterations before `upto`."""
    pool = {lang: list(items) for lang, items in seeds.items()}
    for k in range(1, upto):
        it = paths.iteration(k)
        for row in artifacts.read_jsonl(it.instructions):
            pool.setdefault(row["language"], []).append(row["instruction"])
    return pool


def previous_adapters(paths: artifacts.RunPaths, k: int) -> dict[str, str]:
    if k == 1:
        return {}
    prev = paths.iteration(k - 1)
    return {role: str(prev.adapter(role)) for role in artifacts.ROLES}

