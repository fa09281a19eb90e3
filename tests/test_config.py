"""Every config file composes and validates; bad values are all reported, with fixes."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from selflengthen import preflight
from selflengthen.config import schema
from selflengthen.core.errors import UserError
from selflengthen.evaluation import in_run
from selflengthen.models.resolve import EMBEDDED_TINY
from selflengthen.store import seeds
from tests.fakes import typed

CONF = Path(__file__).resolve().parent.parent / "conf"
# presets name uncached hub ids: validated as online, the hub stood in for on loopback
pytestmark = pytest.mark.usefixtures("hub_on_loopback")
MODEL_PRESETS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
PRESETS = [f"model={p}" for p in MODEL_PRESETS] + \
    [f"experiment={p.stem}" for p in sorted((CONF / "experiment").glob("*.yaml"))]


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_there_are_real_model_presets():
    assert "tiny" in MODEL_PRESETS
    assert any("qwen" in p for p in MODEL_PRESETS) and any("llama" in p for p in MODEL_PRESETS)


@pytest.mark.parametrize("preset", MODEL_PRESETS)
def test_every_model_preset_composes_and_validates(preset):
    cfg = compose_cfg(f"model={preset}")
    OmegaConf.resolve(cfg)
    assert preflight.problems(cfg) == []
    assert cfg.model.name == preset


@pytest.mark.parametrize("group", ["engine", "train", "loop"])
def test_every_group_option_composes(group):
    for option in sorted((CONF / group).glob("*.yaml")):
        cfg = compose_cfg(f"{group}={option.stem}")
        assert preflight.problems(cfg) == []


def test_real_presets_use_the_paper_scale_and_tiny_scales_down():
    qwen = compose_cfg("model=qwen2.5-7b-instruct")
    assert qwen.loop.augment.new_per_language == 5000 and qwen.loop.generate.retries == 20
    assert qwen.train.learning_rate == 1e-4 and qwen.train.epochs == 4
    assert list(qwen.model.languages) == ["en", "zh"]
    tiny = compose_cfg()
    assert tiny.model.path == EMBEDDED_TINY and tiny.loop.augment.new_per_language < 100
    assert "learning_rate" in tiny.train.per_role.generator and tiny.train.per_role.extender == {}  # merged
    one_role = compose_cfg("train.per_role.generator.learning_rate=7e-4")
    assert one_role.train.per_role.generator.learning_rate == 7e-4 and one_role.train.per_role.extender == {}
    assert one_role.train.learning_rate == tiny.train.learning_rate
    # a user pointing the default at a real model only changes model.path
    real = compose_cfg("model.path=Qwen/Qwen2.5-7B-Instruct")
    assert preflight.problems(real) == []


def test_all_problems_reported_together():
    cfg = compose_cfg("iterations=0", "model.path=./no/such/model", "loop.extend.min_growth=0.5",
                      "loop.sampling.max_tokens=99999", "model.languages=[fr]")
    found = preflight.problems(cfg)
    assert len(found) == 6, found  # fr also lacks quality rules
    with pytest.raises(UserError, match="config has 6 problems"):
        preflight.validate(cfg)
    assert any("model.path='./no/such/model'" in p and "hub id" in p for p in found)


def test_drop_preface_is_the_papers_by_default_and_set_for_smollm2():
    assert typed(compose_cfg()).loop.extend.drop_preface is False
    smol = typed(compose_cfg("experiment=smollm2-lengthening"))
    assert smol.loop.extend.drop_preface is True
    assert smol.train.per_role.generator == {"learning_rate": 5.0e-4, "epochs": 2}  # few rows: a stronger step
    assert typed(compose_cfg("experiment=smollm2-lengthening", "loop.extend.drop_preface=false")).loop.extend.drop_preface is False


def test_max_growth_must_lie_above_min_growth():
    assert typed(compose_cfg("loop.extend.max_growth=1.8")).loop.extend.max_growth == 1.8
    assert typed(compose_cfg("model=qwen2.5-7b-instruct")).loop.extend.max_growth is None  # the paper's: no bound
    assert typed(compose_cfg()).loop.extend.max_growth == 1.4  # the tiny preset bounds its growth
    found = preflight.problems(compose_cfg("loop.extend.max_growth=1.1"))
    assert len(found) == 1 and "max_growth (1.1) must be above min_growth (1.2)" in found[0], found


def test_adapters_are_served_merged_on_cpus_and_as_lora_on_gpus_unless_told():
    engine = typed(compose_cfg()).engine
    assert engine.lora_serving == "auto" and engine.merges_adapters(on_gpu=False) and not engine.merges_adapters(True)
    assert not typed(compose_cfg("engine.lora_serving=adapters")).engine.merges_adapters(on_gpu=False)
    assert typed(compose_cfg("engine.lora_serving=merged")).engine.merges_adapters(on_gpu=True)
    # merged serving's swaps: reload only for a model whose reload was checked, unless asked
    tiny = typed(compose_cfg())
    assert tiny.engine.merged_swap == "auto" and tiny.engine.reloads_weights(tiny.model)
    smol = typed(compose_cfg("model=smollm2-135m"))
    assert not smol.model.reloads_in_place and not smol.engine.reloads_weights(smol.model)
    assert typed(compose_cfg("model=smollm2-135m", "engine.merged_swap=reload")).engine.reloads_weights(smol.model)
    assert not typed(compose_cfg("engine.merged_swap=restart")).engine.reloads_weights(tiny.model)
    found = preflight.problems(compose_cfg("engine.lora_serving=fused"))
    assert len(found) == 1 and "engine.lora_serving" in found[0], found


def test_held_out_answers_per_item():
    assert typed(compose_cfg("model=qwen2.5-7b-instruct")).eval.samples == 1  # one answer, as the benchmarks do
    assert typed(compose_cfg()).eval.samples == 4  # the demo's curve: 4 answers to each held-out instruction
    found = preflight.problems(compose_cfg("eval.samples=0"))
    assert len(found) == 1 and "eval.samples" in found[0], found


def test_loop_floor_is_off_by_default_and_a_ratio_when_set():
    real = typed(compose_cfg("model=qwen2.5-7b-instruct")).loop.quality_rules()
    assert real["en"].loop_floor is None and real["zh"].loop_floor is None  # the reference's check
    tiny = typed(compose_cfg()).loop.quality_rules()["en"]
    assert tiny.loop_floor == 0.25 and tiny.ngram == 10 and "." in tiny.terminal_marks  # merged into the rest
    assert typed(compose_cfg("loop.quality.en.loop_floor=0.3")).loop.quality_rules()["en"].loop_floor == 0.3
    found = preflight.problems(compose_cfg("loop.quality.en.loop_floor=1.5"))
    assert len(found) == 1 and "loop.quality.en.loop_floor" in found[0], found


def test_seed_pool_shipped_and_user_file(tmp_path):
    pool = seeds.load_seeds(typed(compose_cfg()).seeds, ["en", "zh"])
    assert len(pool["en"]) >= 50 and len(pool["zh"]) >= 50
    assert len(set(pool["en"])) == len(pool["en"])
    mine = tmp_path / "seeds.jsonl"
    mine.write_text('{"instruction": "Write a long saga about a lighthouse keeper."}\n\n'
                    '{"instruction": "写一篇关于灯塔看守人的长篇故事。"}\n'
                    '{"instruction": "Write an extensive history of tea.", "language": "en"}\n', encoding="utf-8")
    pool = seeds.load_seeds(typed(compose_cfg(f"seeds.path={mine}")).seeds, ["en"])
    assert pool == {"en": ["Write a long saga about a lighthouse keeper.", "Write an extensive history of tea."]}
    mine.write_text('{"instruction": "ok one"}\nnot json\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2"):
        seeds.load_seeds(typed(compose_cfg(f"seeds.path={mine}")).seeds, ["en"])


def test_the_in_run_eval_checks_apply_to_the_loop_only():
    """judge=vllm cannot run beside the loop's engine, but eval/dpo/agentwrite/finalize may use it."""
    cfg = compose_cfg("judge=vllm", "eval.every_iteration=true")
    assert any(p.startswith("judge=vllm cannot run inside a run") for p in preflight.problems(cfg, in_run.CONFIG_CHECK))
    assert not any(p.startswith("judge=vllm") for p in preflight.problems(cfg))


@pytest.mark.parametrize("verb", sorted(schema.VERBS))
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_is_a_typed_config_of_every_verb(compose_config, verb, preset):
    """Each shipped preset composes, for each verb, into that verb's frozen typed settings
    with every key declared (model presets and experiments alike)."""
    container = OmegaConf.to_container(compose_config(preset, verb=verb), resolve=True)
    assert schema.problems(container, verb) == []
    settings = schema.VERBS[verb].model_validate(container)
    with pytest.raises(Exception, match="frozen"):
        settings.seed = 1


def test_an_unknown_key_is_refused_in_one_line(compose_config):
    cfg = compose_config("+loop.generate.drop_shrot=true", "+engine.base_url=http://x")  # vllm has no base_url
    assert preflight.problems(cfg) == [
        "unknown config key 'loop.generate.drop_shrot': check its spelling (python -m selflengthen run --help "
        "shows every key)",
        "unknown config key 'engine.base_url': check its spelling (python -m selflengthen run --help shows every key)"]


def test_engines_and_judges_are_typed_by_their_kind(compose_config):
    typed = schema.Config.model_validate(OmegaConf.to_container(
        compose_config("engine=openai", "judge=openai", "judge.model=gpt-4o"), resolve=True))
    assert isinstance(typed.engine, schema.OpenaiEngine) and typed.engine.timeout == 600
    assert isinstance(typed.judge, schema.OpenaiJudge) and typed.judge.model == "gpt-4o"
    vllm_with_openai_keys = compose_config("engine=openai", "engine.kind=vllm")
    found = preflight.problems(vllm_with_openai_keys)  # openai's keys refused, vLLM's own missing
    assert any("unknown config key 'engine.base_url'" in p for p in found), found
    assert any(p.startswith("engine.max_lora_rank is missing") for p in found), found


def test_an_engine_declares_whether_it_serves_here():
    """`serves_local_weights`, not the kind's name, decides the LoRA-slot check (and the GPU
    placement and the estimate's serving memory); the replica kinds share ReplicaEngine's keys."""
    assert schema.ENGINE_TYPES == {"vllm": schema.VllmEngine, "transformers": schema.TransformersEngine,
                                   "openai": schema.OpenaiEngine}
    here = {kind for kind, t in schema.ENGINE_TYPES.items() if t.serves_local_weights}
    assert here == {kind for kind, t in schema.ENGINE_TYPES.items() if issubclass(t, schema.ReplicaEngine)}
    assert here == {"vllm", "transformers"} and not issubclass(schema.TransformersEngine, schema.VllmEngine)
    slots = "engine.max_lora_rank (8) must be >= train.rank (16)"
    assert slots in preflight.problems(compose_cfg("engine.max_lora_rank=8", "train.rank=16"))
    assert slots in preflight.problems(compose_cfg("engine=transformers", "engine.max_lora_rank=8", "train.rank=16"))
    assert preflight.problems(compose_cfg("engine=openai", "train.rank=16")) == []  # a server elsewhere has its own


def test_shared_keys_are_declared_once():
    """The judge reaches its server with engine=openai's keys; dpo.train's schedule is train's;
    the eval and dpo verbs choose items with eval.*'s keys; finalize.rewrite decodes with
    loop.sampling's keys (each with its own defaults where they differ)."""
    assert set(schema.OpenaiEngine.model_fields) < set(schema.OpenaiJudge.model_fields)
    assert set(schema.Optimization.model_fields) == set(schema.Train.model_fields) & set(schema.DpoTrain.model_fields)
    for root in (schema.Eval, schema.EvalConfig, schema.DpoConfig):
        assert issubclass(root, schema.Questions), root
    assert issubclass(schema.Rewrite, schema.Decoding) and issubclass(schema.Sampling, schema.Decoding)
    assert schema.Rewrite().repetition_penalty == 1.0 and schema.Sampling().repetition_penalty == 1.1
    url = "http://127.0.0.1:8000/v1"
    assert schema.OpenaiJudge(model="m", base_url=url).max_concurrency == 32
    assert schema.OpenaiEngine(base_url=url).max_concurrency == 64
