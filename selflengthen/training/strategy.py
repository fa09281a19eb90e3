"""How one adapter's training is spread over its workers (`train.strategy`): the arguments
TRL's SFTConfig takes for data parallel (ddp, the default), FSDP or DeepSpeed ZeRO-3, with
optional CPU offload, and the checks that the chosen strategy can run here."""
from __future__ import annotations

STRATEGIES = ("ddp", "fsdp", "deepspeed")
SHARDED = ("fsdp", "deepspeed")  # weights split across GPUs: GPUs only


def sft_kwargs(tcfg: dict, cuda: bool) -> dict:
    """SFTConfig arguments for train.strategy and train.cpu_offload."""
    checkpointing = bool(cuda and tcfg["gradient_checkpointing"])
    strategy = tcfg["strategy"]
    out = {"gradient_checkpointing": checkpointing}
    if checkpointing:  # reentrant checkpointing breaks DDP's gradient hooks on PEFT models
        out["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if strategy == "fsdp":
        # FSDP2, each decoder layer its own unit, a full state dict gathered for rank 0 to save. The model's
        # own gradient checkpointing, not FSDP's activation_checkpointing: its wrapper renames the LoRA
        # modules, and PEFT then finds no adapter weights in the gathered state dict (seen on an H100)
        return {**out, "fsdp": True,
                "fsdp_config": {"version": 2, "cpu_offload": bool(tcfg["cpu_offload"]),
                                "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "state_dict_type": "FULL_STATE_DICT"}}
    if strategy == "deepspeed":
        return {**out, "deepspeed": deepspeed_config(bool(tcfg["cpu_offload"]))}
    return {**out, "ddp_find_unused_parameters": False}  # every LoRA (or full) weight takes part


def deepspeed_config(cpu_offload: bool) -> dict:
    """ZeRO-3 (the reference recipe's), optimizer and parameters offloaded to CPU memory when
    asked; "auto" values are filled by transformers from SFTConfig."""
    zero = {"stage": 3, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
            "stage3_gather_16bit_weights_on_model_save": True}
    if cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}


def cluster_problems(tcfg: dict, gpus: float, cpus: float) -> list[str]:
    """What one adapter's training needs that the Ray cluster does not have (it would wait forever)."""
    workers, strategy = tcfg["workers"], tcfg["strategy"]
    if strategy in SHARDED and not gpus:
        return [f"train.strategy={strategy} needs GPUs and the Ray cluster has none; "
                "use train.strategy=ddp (the default) on CPUs"]
    out = []
    if gpus and workers * tcfg["num_gpus"] > gpus:
        out.append(f"train.workers={workers} x train.num_gpus={tcfg['num_gpus']:g} needs "
                   f"{workers * tcfg['num_gpus']:g} GPUs for one adapter and the Ray cluster has {gpus:g}; "
                   "lower train.workers or train.num_gpus, or add GPU nodes")
    if workers * tcfg["num_cpus"] > cpus:
        out.append(f"train.workers={workers} x train.num_cpus={tcfg['num_cpus']:g} needs "
                   f"{workers * tcfg['num_cpus']:g} CPUs for one adapter and the Ray cluster has {cpus:g}; "
                   "lower train.workers or train.num_cpus (or raise ray.num_cpus)")
    return out

