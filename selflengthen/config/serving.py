"""What serves and is served: the model (model.*), the engines (engine.*: one settings type
per kind, members of the `Engine` union) and Ray (ray.*).

An engine's settings type declares what the kind does beside its keys:
`serves_local_weights` (the model's weights are loaded on this cluster, on its GPUs, with
LoRA slots for the adapters; false for a server elsewhere, which owns its GPUs and slots).
A kind served in Ray replicas (engines/replicas.py) subclasses `ReplicaEngine`; a new kind
adds its type to the `Engine` union and its row to engines/registry.py."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional, Union, get_args

from pydantic import Field

from selflengthen.config.group import Group, Language, eg


class ReplicaEngine(Group):
    """The keys of an engine served in Ray replicas on this cluster (engines/replicas.py),
    whichever code serves it: a subclass names its `kind`."""
    serves_local_weights: ClassVar[bool] = True
    kind: str
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


class VllmEngine(ReplicaEngine):
    """engine=vllm (conf/engine/vllm.yaml): vLLM replicas on Ray."""
    kind: Literal["vllm"] = "vllm"


class TransformersEngine(ReplicaEngine):
    """engine=transformers: the vLLM preset's keys, served by transformers in Ray replicas."""
    kind: Literal["transformers"] = "transformers"


class OpenaiEngine(Group):
    """engine=openai (conf/engine/openai.yaml): an OpenAI-compatible server elsewhere."""
    serves_local_weights: ClassVar[bool] = False
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
ENGINE_TYPES: dict[str, type[Group]] = {member.model_fields["kind"].default: member
                                       for member in get_args(get_args(Engine)[0])}  # by `engine.kind`
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


class Ray(Group):
    address: Optional[str] = None
    num_cpus: Optional[int] = eg("null (all cores)", None, ge=1)
    log_to_driver: bool = eg("false", False)
    connect_timeout_s: float = eg("15", 15, gt=0)
    dashboard: bool = eg("false", False)
