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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selflengthen.core.prompting import LANGUAGES  # the languages with prompt templates (selflengthen/prompts/)


def eg(example: str, **constraints) -> object:
    """A constrained field with an example of a valid override (shown in the fix)."""
    return Field(json_schema_extra={"eg": example}, **constraints)


Language = Literal[LANGUAGES]


class Group(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class Sampling(Group):
    temperature: float = eg("0.7", ge=0)
    top_p: float = eg("0.8", gt=0, le=1)
    top_k: int = eg("20 (or -1: off)")
    repetition_penalty: float = eg("1.1", gt=0)
    max_tokens: int = eg("768", ge=1)
    stop: list[str]

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int) -> int:
        if v != -1 and v < 1:
            raise ValueError("must be -1 (no top-k) or >= 1")
        return v


class Augment(Group):
    new_per_language: int = eg("24", ge=1)
    tries: int = eg("10", ge=1)
    min_words: int = eg("3", ge=0)
    max_words: int = eg("500", ge=1)
    max_tokens: int = eg("512", ge=1)
    judge_max_tokens: int = eg("8", ge=1)

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_words >= self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must be below max_words ({self.max_words})")
        return self


class Generate(Group):
    samples: int = eg("2", ge=1)
    retries: int = eg("20", ge=1)
    drop_short: bool = eg("true")


class Extend(Group):
    attempts: int = eg("2", ge=1)
    retries: int = eg("20", ge=1)
    rounds: int = eg("3", ge=1)
    min_growth: float = eg("1.2 (the paper's value)", ge=1.0)
    drop_short: bool = eg("true")


class Curate(Group):
    line_keep_prob: float = eg("0.8 (the paper's value)", gt=0, le=1)


class QualityRule(Group):
    terminal_marks: list[str]
    ngram: int = eg("10", ge=1)
    unit_mode: str
    meta_words: list[str]
    meta_head_lines: int = eg("2", ge=0)
    meta_tail_lines: int = eg("3", ge=0)
    meta_match: str
    meta_lines: str


class Loop(Group):
    synth: str
    sampling: Sampling
    augment: Augment
    generate: Generate
    extend: Extend
    curate: Curate
    quality: dict[str, QualityRule]


class Train(Group):
    rank: int = eg("16", ge=1)
    alpha: float = eg("32", gt=0)
    dropout: float = eg("0.05", ge=0, lt=1)
    target_modules: Union[str, list[str]]
    learning_rate: float = eg("1e-4", gt=0)
    epochs: float = eg("2", gt=0)
    lr_scheduler: str
    warmup_ratio: float = eg("0.1", ge=0, le=1)
    per_device_batch_size: int = eg("1", ge=1)
    gradient_accumulation_steps: int = eg("1", ge=1)
    max_length: int = eg("3072", ge=1)
    bf16: Union[bool, Literal["auto"]] = eg("auto")
    gradient_checkpointing: bool = eg("true")
    logging_steps: int = eg("1", ge=1)
    cpu_threads: Optional[int] = eg("null (the task's CPUs, capped by OMP_NUM_THREADS)", ge=1)
    num_gpus: float = eg("1", ge=0)
    num_cpus: float = eg("1", gt=0)
    parallel: bool = eg("true")
    workers: int = eg("2", ge=1)
    strategy: Literal["ddp", "fsdp", "deepspeed"] = eg("ddp")
    cpu_offload: bool = eg("false")
    save_every_steps: int = eg("50 (0: no checkpoints)", ge=0)
    per_role: dict[str, dict]

    @field_validator("per_role")
    @classmethod
    def _roles(cls, v: dict) -> dict:
        unknown = sorted(set(v) - {"generator", "extender"})
        if unknown:
            raise ValueError(f"has unknown roles {unknown}; use generator and extender")
        return v


class Engine(Group):
    kind: Literal["vllm", "transformers", "openai"]
    replicas: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = eg("auto")
    tensor_parallel_size: int = eg("1", ge=1)
    gpu_memory_utilization: float = eg("0.9", gt=0, le=1)
    cpu_memory_utilization: float = eg("0.2", gt=0, le=1)
    enforce_eager: bool = eg("false")
    max_lora_rank: int = eg("16", ge=1)
    max_num_seqs: int = eg("256", ge=1)
    max_in_flight_per_replica: int = eg("512", ge=1)
    num_cpus_per_replica: float = eg("1", gt=0)
    per_request_seeds: bool = eg("true")
    cpu_single_process: bool = eg("true", default=True)
    seed: int
    # the openai engine's keys (absent from the other engines' presets)
    base_url: Optional[str] = None
    max_concurrency: Optional[int] = eg("64", ge=1, default=None)
    timeout: Optional[float] = eg("600", gt=0, default=None)
    max_retries: Optional[int] = eg("5", ge=0, default=None)
    ready_timeout: Optional[float] = eg("120", gt=0, default=None)
    send_extra_sampling: Optional[bool] = eg("true", default=None)
    load_adapters: Optional[bool] = eg("false", default=None)


class Model(Group):
    name: str = eg("mine", min_length=1)
    path: str = eg("Qwen/Qwen2.5-7B-Instruct", min_length=1)
    languages: list[Language] = eg("[en]", min_length=1)
    end_of_turn: list[str]
    max_model_len: int = eg("8192", ge=16)
    dtype: Literal["auto", "float32", "float16", "bfloat16", "half", "float"] = eg("bfloat16")
    trust_remote_code: bool = eg("false")


class Phase(Group):
    max_tokens: int = eg("2048", ge=1)
    temperature: Optional[float] = eg("null (the run's)", ge=0, default=None)
    stop: Optional[list[str]] = None
    prefill: bool = eg("false", default=False)


class AgentFilter(Group):
    min_words: int = eg("0", ge=0)
    max_words: Optional[int] = eg("null (no bound)", ge=1)
    quality: bool = eg("true")


class AgentMix(Group):
    general: Optional[str] = None
    general_split: str
    general_per_long: float = eg("1.0", ge=0)


class AgentWrite(Group):
    min_words: int = eg("200", ge=1)
    max_words: int = eg("1000", ge=1)
    max_steps: int = eg("50", ge=1)
    default_step_words: int = eg("500", ge=1)
    max_items_in_flight: Optional[int] = eg("null (all)", ge=1)
    max_written_chars: Optional[int] = eg("40000", ge=1)
    plan: Phase
    write: Phase
    filter: AgentFilter
    mix: AgentMix


class Eval(Group):
    every_iteration: bool = eg("false")
    benchmarks: list[str]
    data: Optional[str] = None
    limit: Optional[int] = eg("6", ge=1)
    languages: Optional[list[Language]] = None
    max_tokens: Optional[int] = eg("null", ge=1)


class Ray(Group):
    address: Optional[str] = None
    num_cpus: Optional[int] = eg("null (all cores)", ge=1)
    log_to_driver: bool = eg("false")
    connect_timeout_s: float = eg("15", gt=0)
    dashboard: bool = eg("false", default=False)


class Run(Group):
    name: str = eg("mine", min_length=1)


class Paths(Group):
    iterations_dir: str = eg("iterations", min_length=1)
    cache_dir: str = eg("~/.cache/selflengthen", min_length=1)


class Seeds(Group):
    path: Optional[str] = None


class Status(Group):
    interval_s: float = eg("5", gt=0)
    stale_after_s: float = eg("120", gt=0)


class FinalizeTraining(Group):
    method: Literal["lora", "full"] = eg("lora")
    learning_rate: Optional[float] = eg("null (the run's train.learning_rate)", gt=0)
    epochs: Optional[float] = eg("null (the run's train.epochs)", gt=0)
    max_length: Optional[int] = eg("null (the run's train.max_length)", ge=1)
    rank: Optional[int] = eg("null (the run's train.rank)", ge=1)
    alpha: Optional[float] = eg("null (the run's train.alpha)", gt=0)


class LengthUnit(Group):
    words: int = eg("1000", ge=1)
    prob: float = eg("0.8", ge=0, le=1)


class TypeProbs(Group):
    about: float = eg("0.4", ge=0, le=1)
    range: float = eg("0.25", ge=0, le=1)
    above: float = eg("0.1", ge=0, le=1)
    below: float = eg("0.25", ge=0, le=1)


class Constraints(Group):  # the sums and min < max: finalize/constraints.py, once these types are right
    min_words: int = eg("2000", ge=1)
    max_words: int = eg("8000", ge=1)
    units: list[LengthUnit] = eg("[{words: 1000, prob: 1.0}]", min_length=1)
    type_probs: TypeProbs
    zh_numeral_prob: float = eg("0.5", ge=0, le=1)


class RewriteVerify(Group):
    min_length_ratio: float = eg("0.5", ge=0)
    max_length_ratio: float = eg("2.5", gt=0)
    slack_chars: int = eg("40", ge=0)


class Rewrite(Group):
    use_model: bool = eg("true")
    temperature: float = eg("0.7", ge=0)
    top_p: float = eg("0.8", gt=0, le=1)
    top_k: int = eg("20 (or -1: off)")
    repetition_penalty: float = eg("1.0", gt=0)
    max_tokens: int = eg("1024", ge=1)
    adapter: Optional[Literal["generator", "extender"]] = eg("null (the base model)")
    verify: RewriteVerify

    _top_k = field_validator("top_k")(Sampling._top_k.__func__)


class Finalize(Group):
    output_dir: str = eg("final", min_length=1)
    dataset_name: str = eg("selflengthen_final", min_length=1)
    allow_unfinished: bool = eg("false")
    extra_per_language: int = eg("0 (only what the loop made)", ge=0)
    keep_unconstrained: bool = eg("true")
    train: bool = eg("false")
    merge: bool = eg("false")
    training: FinalizeTraining
    constraints: Constraints
    rewrite: Rewrite


class Prices(Group):
    prompt: Optional[float] = eg("null (no cost estimate)", ge=0)
    completion: Optional[float] = eg("null (no cost estimate)", ge=0)


class Judge(Group):  # conf/judge/: none | vllm | openai (each option has its own keys)
    kind: Literal["none", "vllm", "openai"] = eg("none")
    model: Optional[str] = None
    max_model_len: Optional[int] = eg("32768", ge=16, default=None)
    dtype: Optional[Literal["auto", "float32", "float16", "bfloat16", "half", "float"]] = eg("auto", default=None)
    end_of_turn: Optional[list[str]] = None
    trust_remote_code: Optional[bool] = eg("false", default=None)
    retries: Optional[int] = eg("3", ge=0, default=None)
    temperature: Optional[float] = eg("0.5", ge=0, default=None)
    max_tokens: Optional[int] = eg("1024", ge=1, default=None)
    price_per_million_tokens: Optional[Prices] = None
    base_url: Optional[str] = None
    tokenizer: Optional[str] = None
    api_key_env: Optional[str] = None
    adapter_models: Optional[dict[str, str]] = None
    max_concurrency: Optional[int] = eg("32", ge=1, default=None)
    timeout: Optional[float] = eg("600", gt=0, default=None)
    max_retries: Optional[int] = eg("5", ge=0, default=None)
    send_extra_sampling: Optional[bool] = eg("false", default=None)
    load_adapters: Optional[bool] = eg("false", default=None)
    ready_timeout: Optional[float] = eg("120", gt=0, default=None)
    per_request_seeds: Optional[bool] = eg("false", default=None)


class TensorBoardTracking(Group):
    dir: Optional[str] = None


class MlflowTracking(Group):
    experiment: str = eg("selflengthen", min_length=1)


class WandbTracking(Group):
    mode: Literal["offline", "online", "disabled"] = eg("offline")
    project: str = eg("selflengthen", min_length=1)
    entity: Optional[str] = None


class Tracking(Group):  # conf/tracking/: each selected tracker adds its key
    group: Optional[str] = None
    tensorboard: Optional[TensorBoardTracking] = None
    mlflow: Optional[MlflowTracking] = None
    wandb: Optional[WandbTracking] = None


class DpoTrain(Group):
    beta: float = eg("0.1", gt=0)
    loss_type: str = eg("sigmoid", min_length=1)
    learning_rate: float = eg("5e-5", gt=0)
    epochs: float = eg("2", gt=0)
    max_steps: Optional[int] = eg("null (epochs decide)", ge=1)
    lr_scheduler: str = eg("cosine", min_length=1)
    warmup_ratio: float = eg("0.1", ge=0, le=1)
    per_device_batch_size: int = eg("1", ge=1)
    gradient_accumulation_steps: int = eg("1", ge=1)
    max_length: int = eg("8192", ge=1)
    logging_steps: int = eg("1", ge=1)


class Dpo(Group):
    samples_per_instruction: int = eg("4", ge=2)
    temperature: float = eg("0.8", gt=0)
    pairing: Literal["best_vs_worst", "all"] = eg("best_vs_worst")
    min_margin: float = eg("10.0", ge=0)
    train: DpoTrain


class Config(Group):
    iterations: int = eg("4", ge=1)
    seed: int = eg("0", ge=0)
    run: Run
    paths: Paths
    seeds: Seeds
    model: Model
    loop: Loop
    train: Train
    engine: Engine
    agentwrite: AgentWrite
    eval: Eval
    ray: Ray
    progress: bool = eg("true")
    status: Status
    debug: bool = eg("false")
    sweep_name: Optional[str] = None
    finalize: Finalize
    judge: Judge
    tracking: Tracking
    # the verbs' own keys (conf/eval.yaml, dpo.yaml, agentwrite.yaml, finalize.yaml); absent under `run`
    benchmark: Optional[Union[str, list[str]]] = eg("heldout_tiny (eval: or a list, [longen,ruler])", default=None)
    data: Optional[str] = None
    adapter: Optional[str] = None
    predictions: Optional[str] = None
    input: Optional[str] = None
    limit: Optional[int] = eg("6 (or null: all)", ge=1, default=None)
    languages: Optional[list[Language]] = eg("[en]", default=None)
    max_tokens: Optional[int] = eg("null (the benchmark's own)", ge=1, default=None)
    name: Optional[str] = None
    out_dir: Optional[str] = eg("eval", min_length=1, default=None)
    step: Optional[Literal["all", "collect", "constrain", "export", "train", "eval"]] = eg("all", default=None)
    dpo: Optional[Dpo] = None


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


def _model_in(ann) -> type[BaseModel] | None:
    """The group an annotation holds: itself, or inside Optional[...] / list[...]."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    return next((m for m in map(_model_in, get_args(ann)) if m is not None), None)


def _example(loc: tuple, root: type[BaseModel]) -> str | None:
    model, example = root, None
    for part in loc:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return example
        info = fields[part]
        example = (info.json_schema_extra or {}).get("eg") if isinstance(info.json_schema_extra, dict) else None
        model = _model_in(info.annotation)
        if model is None:
            return example
    return example


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


def _lines(errors: list[dict], prefix: str, root: type[BaseModel]) -> list[tuple[str, str]]:
    """One line per key (a union's alternatives are joined with "or")."""
    by_key: dict[str, list[dict]] = {}
    for err in errors:
        by_key.setdefault(prefix + _key(tuple(err["loc"])), []).append(err)
    out = []
    for key, errs in by_key.items():
        first = errs[0]
        if first["type"] == "value_error":  # our own validators: the message names the rule and the fix
            what = first["msg"].removeprefix("Value error, ")
            out.append((key, f"{key}={first['input']!r} {what}" if key and not isinstance(first["input"], dict)
                            else (f"{key}: {what}" if key else what)))
            continue
        whats = list(dict.fromkeys(_what(e) for e in errs))
        what = whats[0] + "".join(", or " + w.removeprefix("must be ") for w in whats[1:])
        item = bool(_parts(first["loc"])) and isinstance(_parts(first["loc"])[-1], int)  # a bad element of a list
        shown = "" if first["type"] == "missing" else (f" has {first['input']!r}:" if item else f"={first['input']!r}")
        example = _example(tuple(p for p in first["loc"] if not isinstance(p, int)), root)
        fix = f" (e.g. '{key}={example}')" if example and item else (f" (e.g. {key}={example})" if example else "")
        out.append((key, f"{key}{shown} {what}{fix}"))
    return out


def problems(container: dict) -> list[str]:
    """One line per bad value of the resolved config (a plain dict), or []."""
    return [line for _, line in check(container)]


def check(container: dict) -> list[tuple[str, str]]:
    """(key, line) per bad value of the resolved config (a plain dict)."""
    out = []
    try:
        Config.model_validate(container)
    except ValidationError as err:
        out += _lines(err.errors(include_url=False), "", Config)
    train = container.get("train")
    if isinstance(train, dict) and isinstance(train.get("per_role"), dict):
        for role, over in train["per_role"].items():
            if isinstance(over, dict) and over:
                try:
                    Train.model_validate({**train, **over})
                except ValidationError as err:
                    out += _lines([e for e in err.errors(include_url=False) if e["loc"] and e["loc"][0] in over],
                                  f"train.per_role.{role}.", Train)
    return out
