"""The typed schema of the composed config: every value's type and range, declared once.

Hydra composes the YAML in conf/; this module checks the result before any work starts.
A key is checked by declaring it here (pydantic, strict: `true`/`false` only for a
boolean, a whole number where one is needed, no string where a number is expected).
Groups allow keys they do not declare, so a new key works before it is typed here. The
verbs' own groups and keys (finalize, judge, tracking, dpo, the top-level keys of eval,
dpo, agentwrite and finalize) are typed here too; the rules that join several of their
values stay with the verb (finalize/constraints.py, commands/dpo.py). Cross-key rules (a
value below another) are `model_validator`s; they run only when their group's types are
right. `problems(cfg)` returns one line per bad value: the key, the value, what it must
be and an example of a valid setting.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union, get_args

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import PydanticUndefined

from selflengthen.config.names import SafeName  # every name that becomes a folder (config/names.py)
from selflengthen.core.prompting import LANGUAGES  # the languages with prompt templates (selflengthen/prompts/)
from selflengthen.core.text import CUT_MODES, META_LINES, META_MATCHES, UNIT_MODES, QualityRules


def eg(example: str, default: object = PydanticUndefined, **constraints) -> object:
    """A constrained field with an example of a valid override (shown in the fix) and its
    default: conf/'s value, which fills the key in a config saved before the key existed."""
    return Field(default, json_schema_extra={"eg": example}, **constraints)


Language = Literal[LANGUAGES]


class Group(BaseModel):
    """A config group: strict types, every key declared (an unknown key is refused), frozen."""
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Sampling(Group):
    temperature: float = eg("0.7", 0.7, ge=0)
    top_p: float = eg("0.8", 0.8, gt=0, le=1)
    top_k: int = eg("20 (or -1: off)", 20)
    repetition_penalty: float = eg("1.1", 1.1, gt=0)
    max_tokens: int = eg("768", 16384, ge=1)
    stop: list[str] = ["---", "\n\n\n"]

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int) -> int:
        if v != -1 and v < 1:
            raise ValueError("must be -1 (no top-k) or >= 1")
        return v


class Augment(Group):
    new_per_language: int = eg("24", 5000, ge=1)
    tries: int = eg("10", 10, ge=1)
    min_words: int = eg("3", 3, ge=0)
    max_words: int = eg("500", 500, ge=1)
    max_tokens: int = eg("512", 512, ge=1)
    judge_max_tokens: int = eg("8", 8, ge=1)

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_words >= self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must be below max_words ({self.max_words})")
        return self


class Generate(Group):
    samples: int = eg("2", 2, ge=1)
    retries: int = eg("20", 20, ge=1)
    drop_short: bool = eg("true", True)


class Extend(Group):
    attempts: int = eg("2", 2, ge=1)
    retries: int = eg("20", 20, ge=1)
    rounds: int = eg("3", 3, ge=1)
    min_growth: float = eg("1.2 (the paper's value)", 1.2, ge=1.0)
    max_growth: float | None = eg("1.6 (or null: no bound, the paper's)", None, gt=1.0)
    drop_preface: bool = eg("true", False)
    drop_short: bool = eg("true", True)

    @model_validator(mode="after")
    def _growth_bounds(self):
        if self.max_growth is not None and self.max_growth <= self.min_growth:
            raise ValueError(f"max_growth ({self.max_growth}) must be above min_growth ({self.min_growth}), "
                             "or null for no bound")
        return self


class Curate(Group):
    line_keep_prob: float = eg("0.8 (the paper's value)", 0.8, gt=0, le=1)
    # Not the paper's loop (its constraints come once, after it): the share of generator rows
    # whose instruction states the response's own length (pipeline/stages/curate.py)
    length_hints: float = eg("0.5 (half the generator's rows)", 0.0, ge=0, le=1)


class Guard(Group):
    """loop.guard: flag (or stop before training on) kept data more degenerate than the
    previous iteration's (pipeline/stages/guard.py). Not part of the method: it may change
    when a run resumes."""
    check: bool = eg("true", False)
    margin: float = eg("0.1 (a 10% move of a signal, relative)", 0.1, ge=0)
    stop: bool = eg("true", False)


class QualityRule(Group):
    """loop.quality.<language>: the quality check of one language (core/text.py)."""
    terminal_marks: list[str]
    ngram: int = eg("10", ge=1)
    unit_mode: str
    meta_words: list[str]
    meta_head_lines: int = eg("2", 2, ge=0)
    meta_tail_lines: int = eg("3", 3, ge=0)
    meta_match: str = "substring"
    meta_lines: str = "raw"
    cut: str = "reference"  # the value of every run saved before the key existed
    loop_floor: float | None = eg("0.25 (or null: off, the reference's)", None, gt=0, lt=1)

    @field_validator("terminal_marks")
    @classmethod
    def _single_characters(cls, marks):
        long_marks = [m for m in marks if len(m) != 1]
        if long_marks:
            raise ValueError(f"has {long_marks}: only the text's last character is compared, so give single "
                             "characters (a text ending '...' passes through '.')")
        return marks

    @field_validator("unit_mode", "meta_match", "meta_lines", "cut")
    @classmethod
    def _a_choice(cls, value, info):
        choices = {"unit_mode": UNIT_MODES, "meta_match": META_MATCHES, "meta_lines": META_LINES,
                   "cut": CUT_MODES}[info.field_name]
        if value not in choices:
            raise ValueError(f"must be one of {list(choices)} ({choices[0]!r} is the reference's behaviour)")
        return value

    def rules(self) -> QualityRules:
        """The check's rules for this language (meta words compared case-sensitively, as in the reference)."""
        return QualityRules(terminal_marks=tuple(self.terminal_marks), ngram=self.ngram,
                            meta_words=tuple(self.meta_words), meta_head_lines=self.meta_head_lines,
                            meta_tail_lines=self.meta_tail_lines, unit_mode=self.unit_mode,
                            meta_match=self.meta_match, meta_lines=self.meta_lines, cut=self.cut,
                            loop_floor=self.loop_floor)


Synth = Literal["extend", "agentwrite", "both"]  # loop.synth: how stage 3 makes the longer responses
SYNTHS = get_args(Synth)


class Loop(Group):
    synth: Synth = eg("extend (the paper's extender; agentwrite: LongWriter's plan-then-write; both)",
                      "extend")  # the one value a run had before loop.synth existed
    sampling: Sampling = Sampling()
    augment: Augment = Augment()
    generate: Generate = Generate()
    extend: Extend = Extend()
    curate: Curate = Curate()
    guard: Guard = Guard()
    quality: dict[str, QualityRule]

    def quality_rules(self) -> dict[str, QualityRules]:
        """loop.quality as the quality check's rules, by language."""
        return {language: rule.rules() for language, rule in self.quality.items()}


class Roles(Group):
    """train.per_role: overrides of any train.* key for one role (checked against Train by check())."""
    generator: dict = {}
    extender: dict = {}


class Train(Group):
    rank: int = eg("16", 16, ge=1)
    alpha: float = eg("32", 32, gt=0)
    dropout: float = eg("0.05", 0.05, ge=0, lt=1)
    target_modules: Union[str, list[str]] = "all-linear"
    learning_rate: float = eg("1e-4", 1e-4, gt=0)
    epochs: float = eg("2", 4, gt=0)
    # at most this many optimizer steps (a cap: fewer when the epochs take fewer); null: the epochs decide
    max_steps: Optional[int] = eg("64", None, ge=1)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = eg("0.1", 0.1, ge=0, le=1)
    per_device_batch_size: int = eg("1", 1, ge=1)
    gradient_accumulation_steps: int = eg("1", 1, ge=1)
    max_length: int = eg("3072", 16384, ge=1)
    bf16: Union[bool, Literal["auto"]] = eg("auto", "auto")
    gradient_checkpointing: bool = eg("true", True)
    logging_steps: int = eg("1", 1, ge=1)
    cpu_threads: Optional[int] = eg("null (the task's CPUs, capped by OMP_NUM_THREADS)", None, ge=1)
    num_gpus: float = eg("1", 1, ge=0)
    num_cpus: float = eg("1", 1, gt=0)
    parallel: bool = eg("true", True)
    # a run saved before workers, strategy, cpu_offload, save_every_steps existed ran as with these
    workers: int = eg("2", 1, ge=1)
    strategy: Literal["ddp", "fsdp", "deepspeed"] = eg("ddp", "ddp")
    cpu_offload: bool = eg("false", False)
    save_every_steps: int = eg("50 (0: no checkpoints)", 50, ge=0)
    per_role: Roles = Roles()

    @model_validator(mode="after")
    def _offload(self):
        if self.cpu_offload and self.strategy == "ddp":
            raise ValueError("train.cpu_offload=true needs train.strategy=fsdp or train.strategy=deepspeed "
                             "(ddp keeps a whole copy of the model on every worker)")
        return self


class VllmEngine(Group):
    """engine=vllm (conf/engine/vllm.yaml): vLLM replicas on Ray."""
    kind: Literal["vllm"] = "vllm"
    replicas: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = eg("auto", "auto")
    tensor_parallel_size: int = eg("1", 1, ge=1)
    gpu_memory_utilization: float = eg("0.9", 0.9, gt=0, le=1)
    cpu_memory_utilization: float = eg("0.2", 0.2, gt=0, le=1)
    enforce_eager: bool = eg("false", False)
    max_lora_rank: int = eg("16", ge=1)
    max_num_seqs: int = eg("256", 256, ge=1)
    max_in_flight_per_replica: int = eg("512", 512, ge=1)
    num_cpus_per_replica: Optional[float] = eg("null (GPUs: 1; a CPU-only cluster: its CPUs split between the replicas)",
                                                None, gt=0)
    per_request_seeds: bool = eg("true", True)
    cpu_single_process: bool = eg("true", True)
    # a run saved before lora_serving existed served its adapters as LoRA
    lora_serving: Literal["auto", "adapters", "merged"] = eg("auto", "adapters")
    # a run saved before merged_swap existed restarted its engines at each swap
    merged_swap: Literal["auto", "reload", "restart"] = eg("restart", "restart")
    seed: int

    def merges_adapters(self, on_gpu: bool) -> bool:
        """Whether adapters are served merged into the base weights (engines/merged.py):
        `merged`, or `auto` without GPUs."""
        return self.lora_serving == "merged" or (self.lora_serving == "auto" and not on_gpu)

    def reloads_weights(self, model: "Model") -> bool:
        """Whether merged serving swaps models by reloading the weights into the live engine:
        `reload`, or `auto` for a model whose reload was checked (`model.reloads_in_place`)."""
        return self.merged_swap == "reload" or (self.merged_swap == "auto" and model.reloads_in_place)


class TransformersEngine(VllmEngine):
    """engine=transformers: the vLLM preset's keys, served by transformers in Ray replicas."""
    kind: Literal["transformers"] = "transformers"


class OpenaiEngine(Group):
    """engine=openai (conf/engine/openai.yaml): an OpenAI-compatible server elsewhere."""
    kind: Literal["openai"] = "openai"
    base_url: str = eg("http://127.0.0.1:8000/v1", min_length=1)
    model: Optional[str] = None
    tokenizer: Optional[str] = None
    api_key_env: str = eg("OPENAI_API_KEY", "OPENAI_API_KEY", min_length=1)
    adapter_models: dict[str, Optional[str]] = {}
    load_adapters: bool = eg("false", False)
    max_concurrency: int = eg("64", 64, ge=1)
    timeout: float = eg("600", 600, gt=0)
    max_retries: int = eg("5", 5, ge=0)
    ready_timeout: float = eg("120", 120, gt=0)
    send_extra_sampling: bool = eg("true", True)
    per_request_seeds: bool = eg("true", True)


Engine = Annotated[Union[VllmEngine, TransformersEngine, OpenaiEngine], Field(discriminator="kind")]
Dtype = Literal["auto", "float32", "float16", "bfloat16", "half", "float"]


class TinyBuild(Group):
    """model.build: the embedded tiny model's recipe (models/tiny_model.py)."""
    steps: int = eg("1800", ge=1)
    seed: int = eg("0", ge=0)


class Model(Group):
    name: str = eg("mine", min_length=1)
    path: str = eg("Qwen/Qwen2.5-7B-Instruct", min_length=1)
    languages: list[Language] = eg("[en]", min_length=1)
    end_of_turn: list[str]
    max_model_len: int = eg("8192", ge=16)
    dtype: Dtype = eg("bfloat16")
    trust_remote_code: bool = eg("false", False)
    # checked with scripts/bench_merged_swap.py: vLLM's in-place reload of this model's weights
    # writes what a fresh engine writes (engine.merged_swap=auto reloads only then)
    reloads_in_place: bool = eg("false", False)
    build: Optional[TinyBuild] = None


class Phase(Group):
    max_tokens: int = eg("2048", ge=1)
    temperature: Optional[float] = eg("null (the run's)", None, ge=0)
    stop: Optional[list[str]] = None
    prefill: bool = eg("false", False)


class AgentFilter(Group):
    min_words: int = eg("0", 0, ge=0)
    max_words: Optional[int] = eg("null (no bound)", None, ge=1)
    quality: bool = eg("true", True)

    @model_validator(mode="after")
    def _bounds(self):
        if self.max_words is not None and not self.max_words > self.min_words:
            raise ValueError(f"agentwrite.filter.max_words ({self.max_words}) must be above filter.min_words "
                             f"({self.min_words}), or null for no bound")
        return self


class AgentMix(Group):
    general: Optional[str] = None
    general_split: str = "train"
    general_per_long: float = eg("1.0", 1.0, ge=0)


class AgentWrite(Group):
    min_words: int = eg("200", 200, ge=1)
    max_words: int = eg("1000", 1000, ge=1)
    max_steps: int = eg("50", 50, ge=1)
    default_step_words: int = eg("500", 500, ge=1)
    max_items_in_flight: Optional[int] = eg("null (all)", None, ge=1)
    max_written_chars: Optional[int] = eg("40000", 40000, ge=1)
    plan: Phase = Phase(max_tokens=2048)
    write: Phase = Phase(max_tokens=4096)
    filter: AgentFilter = AgentFilter()
    mix: AgentMix = AgentMix()

    @model_validator(mode="after")
    def _bounds(self):
        if not self.min_words <= self.max_words:
            raise ValueError(f"agentwrite.min_words ({self.min_words}) must be > 0 and <= agentwrite.max_words "
                             f"({self.max_words})")
        return self


class Eval(Group):
    every_iteration: bool = eg("false", False)
    benchmarks: list[str] = ["longbench_write_en"]
    data: Optional[str] = None
    limit: Optional[int] = eg("6", None, ge=1)
    languages: Optional[list[Language]] = None
    max_tokens: Optional[int] = eg("null", None, ge=1)
    samples: int = eg("4", 1, ge=1)


class Ray(Group):
    address: Optional[str] = None
    num_cpus: Optional[int] = eg("null (all cores)", None, ge=1)
    log_to_driver: bool = eg("false", False)
    connect_timeout_s: float = eg("15", 15, gt=0)
    dashboard: bool = eg("false", False)


class Run(Group):
    name: SafeName = eg("mine", min_length=1)


class Paths(Group):
    iterations_dir: str = eg("iterations", "iterations", min_length=1)
    cache_dir: str = eg("~/.cache/selflengthen", min_length=1)


class Seeds(Group):
    path: Optional[str] = None


class Status(Group):
    interval_s: float = eg("5", 5, gt=0)
    stale_after_s: float = eg("120", 120, gt=0)


class FinalizeTraining(Group):
    method: Literal["lora", "full"] = eg("lora", "lora")
    learning_rate: Optional[float] = eg("null (the run's train.learning_rate)", None, gt=0)
    epochs: Optional[float] = eg("null (the run's train.epochs)", None, gt=0)
    max_length: Optional[int] = eg("null (the run's train.max_length)", None, ge=1)
    rank: Optional[int] = eg("null (the run's train.rank)", None, ge=1)
    alpha: Optional[float] = eg("null (the run's train.alpha)", None, gt=0)


class LengthUnit(Group):
    words: int = eg("1000", ge=1)
    prob: float = eg("0.8", ge=0, le=1)


class TypeProbs(Group):
    about: float = eg("0.4", 0.4, ge=0, le=1)
    range: float = eg("0.25", 0.25, ge=0, le=1)
    above: float = eg("0.1", 0.1, ge=0, le=1)
    below: float = eg("0.25", 0.25, ge=0, le=1)


class Constraints(Group):  # the sums and min < max: finalize/constraints.py, once these types are right
    min_words: int = eg("2000", 2000, ge=1)
    max_words: int = eg("8000", 8000, ge=1)
    units: list[LengthUnit] = eg("[{words: 1000, prob: 1.0}]", [LengthUnit(words=2000, prob=0.2),
                                                               LengthUnit(words=1000, prob=0.8)], min_length=1)
    type_probs: TypeProbs = TypeProbs()
    zh_numeral_prob: float = eg("0.5", 0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _sound(self):
        out = []
        if not self.min_words < self.max_words:
            out.append(f"finalize.constraints.min_words ({self.min_words}) must be below max_words ({self.max_words})")
        units = sum(u.prob for u in self.units)
        if abs(units - 1) > 1e-6:
            out.append(f"finalize.constraints.units probabilities sum to {units:g}; make them sum to 1")
        types = sum(self.type_probs.model_dump().values())
        if abs(types - 1) > 1e-6:
            out.append(f"finalize.constraints.type_probs (about, range, above, below) sum to {types:g}; make them "
                       "sum to 1")
        if out:
            raise ValueError("; ".join(out))
        return self


class RewriteVerify(Group):
    min_length_ratio: float = eg("0.5", 0.5, ge=0)
    max_length_ratio: float = eg("2.5", 2.5, gt=0)
    slack_chars: int = eg("40", 40, ge=0)


class Rewrite(Group):
    use_model: bool = eg("true", True)
    temperature: float = eg("0.7", 0.7, ge=0)
    top_p: float = eg("0.8", 0.8, gt=0, le=1)
    top_k: int = eg("20 (or -1: off)", 20)
    repetition_penalty: float = eg("1.0", 1.0, gt=0)
    max_tokens: int = eg("1024", 1024, ge=1)
    adapter: Optional[Literal["generator", "extender"]] = eg("null (the base model)", None)
    verify: RewriteVerify = RewriteVerify()

    _top_k = field_validator("top_k")(Sampling._top_k.__func__)


class Finalize(Group):
    output_dir: SafeName = eg("final", "final", min_length=1)
    dataset_name: str = eg("selflengthen_final", "selflengthen_final", min_length=1)
    allow_unfinished: bool = eg("false", False)
    extra_per_language: int = eg("0 (only what the loop made)", 0, ge=0)
    keep_unconstrained: bool = eg("true", True)
    train: bool = eg("false", False)
    merge: bool = eg("false", False)
    training: FinalizeTraining = FinalizeTraining()
    constraints: Constraints = Constraints()
    rewrite: Rewrite = Rewrite()


class Prices(Group):
    prompt: Optional[float] = eg("null (no cost estimate)", None, ge=0)
    completion: Optional[float] = eg("null (no cost estimate)", None, ge=0)


class NoJudge(Group):
    """judge=none: no judge (quality is not scored)."""
    kind: Literal["none"] = "none"


class VllmJudge(Group):
    """judge=vllm (conf/judge/vllm.yaml): a judge model on its own vLLM engine."""
    kind: Literal["vllm"] = "vllm"
    model: str = eg("/models/Qwen2.5-72B-Instruct", min_length=1)
    max_model_len: int = eg("32768", 32768, ge=16)
    dtype: Dtype = eg("auto", "auto")
    end_of_turn: list[str] = ["<|im_end|>", "<|eot_id|>", "<|endoftext|>"]
    trust_remote_code: bool = eg("false", False)
    retries: int = eg("3", 3, ge=0)
    temperature: float = eg("0.5", 0.5, ge=0)
    max_tokens: int = eg("1024", 1024, ge=1)
    segments: int = eg("4 (0: no part-by-part scores)", 4, ge=0)  # each response judged in this many parts too
    price_per_million_tokens: Prices = Prices()


class OpenaiJudge(Group):
    """judge=openai (conf/judge/openai.yaml): a judge behind an OpenAI-compatible server."""
    kind: Literal["openai"] = "openai"
    base_url: str = eg("http://127.0.0.1:8000/v1", min_length=1)
    model: str = eg("gpt-4o", min_length=1)
    tokenizer: Optional[str] = None
    api_key_env: str = eg("OPENAI_API_KEY", "OPENAI_API_KEY", min_length=1)
    adapter_models: dict[str, Optional[str]] = {}
    max_concurrency: int = eg("32", 32, ge=1)
    timeout: float = eg("600", 600, gt=0)
    max_retries: int = eg("5", 5, ge=0)
    send_extra_sampling: bool = eg("false", False)
    load_adapters: bool = eg("false", False)
    ready_timeout: float = eg("120", 120, gt=0)
    per_request_seeds: bool = eg("false", False)
    end_of_turn: list[str] = []
    retries: int = eg("3", 3, ge=0)
    temperature: float = eg("0.5", 0.5, ge=0)
    max_tokens: int = eg("1024", 1024, ge=1)
    segments: int = eg("4 (0: no part-by-part scores)", 4, ge=0)  # each response judged in this many parts too
    price_per_million_tokens: Prices = Prices()


Judge = Annotated[Union[NoJudge, VllmJudge, OpenaiJudge], Field(discriminator="kind")]


class TensorBoardTracking(Group):
    dir: Optional[str] = None


class MlflowTracking(Group):
    experiment: str = eg("selflengthen", "selflengthen", min_length=1)


class WandbTracking(Group):
    mode: Literal["offline", "online", "disabled"] = eg("offline", "offline")
    project: str = eg("selflengthen", "selflengthen", min_length=1)
    entity: Optional[str] = None


class Tracking(Group):  # conf/tracking/: each selected tracker adds its key
    group: Optional[str] = None
    tensorboard: Optional[TensorBoardTracking] = None
    mlflow: Optional[MlflowTracking] = None
    wandb: Optional[WandbTracking] = None


class DpoTrain(Group):
    beta: float = eg("0.1", 0.1, gt=0)
    loss_type: str = eg("sigmoid", "sigmoid", min_length=1)
    learning_rate: float = eg("5e-5", 5e-5, gt=0)
    epochs: float = eg("2", 2, gt=0)
    max_steps: Optional[int] = eg("null (epochs decide)", None, ge=1)
    lr_scheduler: str = eg("cosine", "cosine", min_length=1)
    warmup_ratio: float = eg("0.1", 0.1, ge=0, le=1)
    per_device_batch_size: int = eg("1", 1, ge=1)
    gradient_accumulation_steps: int = eg("1", 1, ge=1)
    max_length: int = eg("8192", ge=1)
    logging_steps: int = eg("1", 1, ge=1)


class Dpo(Group):
    samples_per_instruction: int = eg("4", 4, ge=2)
    temperature: float = eg("0.8", 0.8, gt=0)
    pairing: Literal["best_vs_worst", "all"] = eg("best_vs_worst", "best_vs_worst")
    min_margin: float = eg("10.0", 10.0, ge=0)
    train: DpoTrain


class Estimate(Group):
    """estimate.* (conf/estimate.yaml): the estimate verb's assumptions."""
    initial_words: float = eg("1000", 1000, gt=0)
    growth_per_round: float = eg("1.26", 1.26, gt=0)
    carryover: float = eg("1.0", 1.0, gt=0)
    instruction_words: float = eg("40", 40, gt=0)
    tokens_per_word: dict[str, float] = {"en": 1.35, "zh": 0.75}
    chat_overhead_tokens: float = eg("30", 30, ge=0)
    augment_pass_rate: float = eg("0.9", 0.9, gt=0, le=1)
    judge_yes_rate: float = eg("0.8", 0.8, gt=0, le=1)
    generate_pass_rate: float = eg("0.8", 0.8, gt=0, le=1)
    extend_accept_rate: float = eg("0.6", 0.6, gt=0, le=1)
    tokens_per_s_per_gpu: Optional[float] = eg("3000", None, gt=0)
    from_run: Optional[str] = None
    train_tokens_per_s_per_gpu: Optional[float] = eg("5000", None, gt=0)
    gpu_tflops: float = eg("989 (H100 bf16)", 989, gt=0)
    mfu: float = eg("0.35", 0.35, gt=0, le=1)
    gpus: int = eg("8", 8, ge=1)
    gpu_memory_gib: float = eg("80", 80, gt=0)
    concurrent_sequences: int = eg("32", 32, ge=1)
    overhead_gib: float = eg("2", 2.0, ge=0)
    out: Optional[str] = None


class Config(Group):
    """The `run` verb's config (conf/config.yaml): also what a run saves as config.yaml."""
    iterations: int = eg("4", 4, ge=1)
    seed: int = eg("0", 0, ge=0)
    run: Run
    paths: Paths
    seeds: Seeds = Seeds()
    model: Model
    loop: Loop
    train: Train = Train()
    engine: Engine
    agentwrite: AgentWrite = AgentWrite()
    eval: Eval = Eval()
    ray: Ray = Ray()
    progress: bool = eg("true", True)
    status: Status = Status()
    debug: bool = eg("false", False)
    sweep_name: Optional[SafeName] = eg("my-sweep", None)
    finalize: Finalize = Finalize()
    judge: Judge = NoJudge()
    tracking: Tracking = Tracking()

    @property
    def method(self) -> Method:
        return Method.of(self.model_dump())


class Method(Group):
    """What a run computes with: a resumed run must have the same (iterations, the engine's
    placement, Ray, paths, debug may change between invocations). A config saved before a
    key existed loads with the key's default, the value the run had in effect."""
    seed: int
    model: Model
    loop: Loop
    train: Train = Train()
    seeds: Seeds = Seeds()
    agentwrite: Optional[AgentWrite] = AgentWrite()  # None where it does not run (loop.synth=extend)

    @classmethod
    def of(cls, container: dict) -> "Method":
        """The method of a config (a plain dict: a composed one, or a run's saved config.yaml)."""
        method = cls.model_validate({k: container[k] for k in cls.model_fields if k in container})
        return method.model_copy(update={"agentwrite": None}) if method.loop.synth == "extend" else method

    def changes(self, other: "Method") -> list[str]:
        """The dotted keys whose values differ, sorted (loop.guard may change between invocations)."""
        return sorted(key for key in _diff(self.model_dump(), other.model_dump()) if not key.startswith("loop.guard"))


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in set(a) | set(b) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


class EvalConfig(Config):
    """`eval` (conf/eval.yaml): the run's keys and the verb's own."""
    benchmark: Optional[Union[str, list[str]]] = eg("heldout_tiny (eval: or a list, [longen,ruler])", None)
    data: Optional[str] = None
    adapter: Optional[str] = None
    predictions: Optional[str] = None
    limit: Optional[int] = eg("6 (or null: all)", None, ge=1)
    languages: Optional[list[Language]] = eg("[en]", None)
    max_tokens: Optional[int] = eg("null (the benchmark's own)", None, ge=1)
    samples: int = eg("4", 1, ge=1)
    name: Optional[SafeName] = eg("my-eval", None)
    out_dir: str = eg("eval", min_length=1)

    @field_validator("benchmark")
    @classmethod
    def _named(cls, v):
        if v is None:
            raise ValueError("is not set; give one (benchmark=longbench_write) or a list (benchmark=[longen,ruler])")
        if not v:
            raise ValueError("names no benchmark; give one (benchmark=longbench_write) or a list "
                             "(benchmark=[longen,ruler])")
        return v

    @property
    def benchmarks(self) -> list[str]:
        """`benchmark=NAME` or `benchmark=[A,B]`: the names, in order, each once."""
        return list(dict.fromkeys([self.benchmark] if isinstance(self.benchmark, str) else self.benchmark))


class DpoConfig(Config):
    """`dpo` (conf/dpo.yaml)."""
    benchmark: str = eg("heldout_tiny", min_length=1)
    data: Optional[str] = None
    adapter: Optional[str] = None
    limit: Optional[int] = eg("6 (or null: all)", None, ge=1)
    languages: Optional[list[Language]] = eg("[en]", None)
    max_tokens: Optional[int] = eg("null (the benchmark's own)", None, ge=1)
    name: Optional[SafeName] = eg("my-dpo", None)
    out_dir: str = eg("dpo", min_length=1)
    dpo: Dpo


class AgentWriteConfig(Config):
    """`agentwrite` (conf/agentwrite.yaml)."""
    input: Optional[str] = None
    adapter: Optional[str] = None
    limit: Optional[int] = eg("6 (or null: all)", None, ge=1)
    name: Optional[SafeName] = eg("my-set", None)
    out_dir: str = eg("agentwrite", min_length=1)


class FinalizeConfig(Config):
    """`finalize` (conf/finalize.yaml)."""
    step: Literal["all", "collect", "constrain", "export", "train", "eval"] = eg("all", "all")


class EstimateConfig(Config):
    """`estimate` (conf/estimate.yaml)."""
    estimate: Estimate = Estimate()


VERBS: dict[str, type[Config]] = {"run": Config, "eval": EvalConfig, "dpo": DpoConfig, "agentwrite": AgentWriteConfig,
                                  "finalize": FinalizeConfig, "estimate": EstimateConfig}


_KINDS = {
    "bool_type": "must be true or false",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "string_type": "must be a string (quote it)",
    "list_type": "must be a list, e.g. '[a,b]'",
    "dict_type": "must be a mapping",
    "model_type": "must be a group of keys",
    "missing": "is missing; set it",
}


def _members(ann) -> list[type[BaseModel]]:
    """The groups an annotation holds: itself, or those inside Optional[...], list[...], a union."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for arg in get_args(ann) for m in _members(arg)]


def _tagged(ann) -> dict[str, type[BaseModel]]:
    """A discriminated union's members by their `kind` (engine, judge), else {}."""
    out = {}
    for m in _members(ann):
        kind = m.model_fields.get("kind")
        if kind is not None and get_args(kind.annotation):
            out[get_args(kind.annotation)[0]] = m
    return out if len(out) > 1 else {}


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[tuple, object]:
    """An error's location without the tags pydantic adds for a discriminated union's member
    ('engine', 'openai', 'timeout' -> 'engine', 'timeout'), and its field's example."""
    model, out, example, i = root, [], None, 0
    while i < len(loc):
        part = loc[i]
        out.append(part)
        i += 1
        info = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        if isinstance(part, int):
            continue
        if info is None:
            model = None
            continue
        extra = info.json_schema_extra
        example = extra.get("eg") if isinstance(extra, dict) else None
        tags = _tagged(info.annotation)
        if tags and i < len(loc) and loc[i] in tags:
            model = tags[loc[i]]
            i += 1  # the tag
        else:
            members = _members(info.annotation)
            model = members[0] if members and not tags else None
    return tuple(out), example


def _parts(loc: tuple) -> list:
    """An error's location without the names pydantic gives a union's members ('int',
    'literal[...]', 'constrained-int')."""
    return [p for p in loc if isinstance(p, int)
            or (isinstance(p, str) and p.isidentifier() and p not in ("int", "bool", "str", "float"))]


def _key(loc: tuple) -> str:
    """The dotted config key of an error's location: a bad element of a list is reported
    under the list's key; a key inside a list's element names its index (units[0].words)."""
    parts, key = _parts(loc), ""
    for i, p in enumerate(parts):
        if isinstance(p, int):
            if i == len(parts) - 1:
                break
            key += f"[{p}]"
        else:
            key += f".{p}" if key else p
    return key


def _what(err: dict) -> str:
    kind = err["type"]
    if kind == "literal_error":
        what = "must be " + err["msg"].removeprefix("Input should be ").replace("'", "")
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(err["ctx"].values()))
        what = f"must be {sign} {bound:g}" if isinstance(bound, float) else f"must be {sign} {bound}"
    elif kind in ("too_short", "string_too_short"):
        what = "must not be empty"
    else:
        what = _KINDS.get(kind, err["msg"].lower())
    return what


def unknown_key(key: str) -> str:
    """The one line for a key the config does not have (the command line's or a file's)."""
    return f"unknown config key '{key}': check its spelling (python -m selflengthen run --help shows every key)"


def _lines(errors: list[dict], prefix: str, root: type[BaseModel]) -> list[tuple[str, str]]:
    """One line per key (a union's alternatives are joined with "or")."""
    by_key: dict[str, list[dict]] = {}
    for err in errors:
        loc, example = _walk(tuple(err["loc"]), root)
        err = {**err, "loc": loc, "eg": example}
        by_key.setdefault(prefix + _key(loc), []).append(err)
    out = []
    for key, errs in by_key.items():
        first = errs[0]
        if first["type"] == "extra_forbidden":
            out.append((key, unknown_key(key)))
            continue
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            kinds = ", ".join(first["ctx"]["expected_tags"].replace("'", "").split(", "))
            tag = first["ctx"].get("tag", "null")
            out.append((f"{key}.kind", f"{key}.kind={tag!r} must be one of {kinds} (e.g. {key}={kinds.split(', ')[0]})"))
            continue
        if first["type"] == "value_error":  # our own validators: the message names the rule and the fix
            what = first["msg"].removeprefix("Value error, ")
            shown = "" if first["input"] is None else repr(first["input"])  # benchmark= is not set
            if key and what.startswith(key):  # the message names its keys itself
                out.append((key, what))
                continue
            out.append((key, f"{key}={shown} {what}" if key and not isinstance(first["input"], dict)
                            else (f"{key}: {what}" if key else what)))
            continue
        whats = list(dict.fromkeys(_what(e) for e in errs))
        what = whats[0] + "".join(", or " + w.removeprefix("must be ") for w in whats[1:])
        item = bool(_parts(first["loc"])) and isinstance(_parts(first["loc"])[-1], int)  # a bad element of a list
        shown = "" if first["type"] == "missing" else (f" has {first['input']!r}:" if item else f"={first['input']!r}")
        example = first["eg"]
        fix = f" (e.g. '{key}={example}')" if example and item else (f" (e.g. {key}={example})" if example else "")
        out.append((key, f"{key}{shown} {what}{fix}"))
    return out


def problems(container: dict, verb: str = "run") -> list[str]:
    """One line per bad value of the resolved config (a plain dict), or []."""
    return [line for _, line in check(container, verb)]


def check(container: dict, verb: str = "run") -> list[tuple[str, str]]:
    """(key, line) per bad value of the resolved config (a plain dict) as the verb reads it."""
    root = VERBS[verb]
    out = []
    try:
        root.model_validate(container)
    except ValidationError as err:
        out += _lines(err.errors(include_url=False), "", root)
    train = container.get("train")
    roles = train.get("per_role") if isinstance(train, dict) else None
    if isinstance(roles, dict):
        for role, over in roles.items():
            if isinstance(over, dict) and over and role in Roles.model_fields:
                try:
                    Train.model_validate({**train, "per_role": {}, **over})
                except ValidationError as err:
                    out += _lines([e for e in err.errors(include_url=False) if e["loc"] and e["loc"][0] in over],
                                  f"train.per_role.{role}.", Train)
    return out


def from_node(cls, node):
    """A typed slice (a Group, or a union such as Engine) of a composed DictConfig node, for
    code that still holds the node: the verbs build their whole settings once at entry
    instead (preflight.settings)."""
    return TypeAdapter(cls).validate_python(OmegaConf.to_container(node, resolve=True))
