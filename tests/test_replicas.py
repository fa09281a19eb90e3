"""Data-parallel replicas for real: the generate stage on 2 vLLM replicas (1 CPU each) does
the same work as on 1 (every sample resolved once, the same counts and id layout) and both
replicas serve."""
from __future__ import annotations

import asyncio
import json

import pytest
from hydra import compose, initialize_config_dir

from selflengthen.engines.factory import sampling_from, serving
from selflengthen.pipeline import stage
from selflengthen.pipeline.stages import generate
from selflengthen.store import artifacts
from tests.conftest import REPO
from tests.fakes import stage_inputs, typed

pytestmark = pytest.mark.slow
TOPICS = ["the json module", "list comprehensions", "the pathlib module", "unit tests", "decorators",
          "context managers", "the logging module", "virtual environments"]


def stage_on(replicas: int, tiny_model, root):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"engine.replicas={replicas}", "engine.num_cpus_per_replica=1",
                                           "loop.sampling.max_tokens=128", "loop.generate.retries=2",
                                           "model.max_model_len=2048", "ray.num_cpus=2"])
    it = artifacts.IterationPaths(root, 1)
    artifacts.write_jsonl(it.instructions, [{"id": f"q{i}", "language": "en", "instruction": f"Write about {t}."}
                                            for i, t in enumerate(TOPICS)])

    async def go():
        settings = typed(cfg)
        async with serving(str(tiny_model), {}, settings.model, settings.engine, settings.ray) as engine:
            stats = await stage.run_stage(generate.STAGE, settings,
                                          stage_inputs(settings, it, engine, sampling_from(settings.loop.sampling)))
            return stats, engine.replica_usage()

    stats, per_replica = asyncio.run(go())
    return stats, per_replica, artifacts.read_jsonl(it.initial), json.loads(it.stage_manifest("generate").read_text())


def test_two_replicas_do_the_work_of_one_and_both_serve(tiny_model, tmp_path):
    one, one_usage, one_rows, _ = stage_on(1, tiny_model, tmp_path / "one")
    two, two_usage, two_rows, manifest = stage_on(2, tiny_model, tmp_path / "two")
    assert len(one_usage) == 1 and len(two_usage) == 2
    assert two["instructions"] == one["instructions"] == len(TOPICS)
    assert two["samples_wanted"] == one["samples_wanted"] == 2 * len(TOPICS)
    served = [sum(u["requests"] for u in replica.values()) for replica in two_usage]
    assert all(n > 0 for n in served), served  # the least-loaded routing used both
    assert sum(served) == two["requests"] == manifest["counts"]["requests"]
    # every sample was resolved exactly once (its first try recorded), on either layout; the
    # texts themselves may differ (a batch's float sums depend on its other rows)
    wanted = {f"q{i}-s{j}" for i in range(len(TOPICS)) for j in range(2)}
    for stats_, rows, man in ((one, one_rows, None), (two, two_rows, manifest)):
        ids = [r["id"] for r in rows]
        assert ids == sorted(ids) and len(set(ids)) == len(ids) and set(ids) <= wanted
        assert stats_["samples_wanted"] <= stats_["requests"] <= stats_["samples_wanted"] * 3  # tries <= 1 + retries
    assert len(manifest["first_try_words"]) == len(wanted)
