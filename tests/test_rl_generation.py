"""`rl.train.generation`: TRL's generate (the default, the CPU path) or TRL's vLLM colocate and
server modes on CUDA GPUs. The settings reach TRL's GRPOConfig as TRL names them, a finished
job made before the setting existed keeps its digest, and a vLLM mode on a cluster without
GPUs is refused in one line before anything is written (through the real command line)."""
import pytest
from pydantic import ValidationError
from trl import GRPOConfig

from selflengthen.commands import rl
from selflengthen.config.rl import RlTrain
from selflengthen.training.grpo import generation_args
from tests.conftest import REPO, run_cli


def rcfg(**train) -> dict:
    return RlTrain(**train).model_dump()


@pytest.mark.parametrize("mode,expected", [
    ("transformers", {"use_vllm": False}),
    ("vllm_colocate", {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.45}),
    ("vllm_server", {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": "http://10.0.0.7:8000"}),
])
def test_each_mode_reaches_trls_config_under_trls_names(tmp_path, mode, expected):
    settings = rcfg(generation=mode, vllm_gpu_memory_utilization=0.45, vllm_server_url="http://10.0.0.7:8000")
    args = generation_args(settings)
    assert args == expected
    config = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, **args)  # TRL accepts them as given
    for key, value in expected.items():
        assert getattr(config, key) == value


def test_a_server_mode_without_its_address_is_refused():
    with pytest.raises(ValidationError, match="rl.train.vllm_server_url"):
        RlTrain(generation="vllm_server")


def test_the_default_path_keeps_an_older_jobs_digest_and_a_vllm_mode_changes_it():
    default = {**rcfg(), "cpu_threads": 2, "rank": 16}
    older = {k: v for k, v in default.items() if k not in rl.GENERATION_KEYS}  # a job made before the setting
    assert rl.made_with_train(default) == rl.made_with_train(older)
    colocated = rl.made_with_train({**default, "generation": "vllm_colocate"})
    assert colocated != rl.made_with_train(default)
    assert colocated["generation"]["generation"] == "vllm_colocate"


def test_the_manifest_names_the_path_taken_and_why():
    assert rl.generation_of(RlTrain())["path"] == "trl-transformers"
    chosen = rl.generation_of(RlTrain(generation="vllm_colocate"))
    assert chosen["path"] == "trl-vllm-colocate" and "rl.train.generation=vllm_colocate" in chosen["reason"]


def test_a_vllm_mode_on_a_cluster_without_gpus_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "rl"
    proc = run_cli("rl", "rl.train.generation=vllm_colocate", f"out_dir={out}", "name=colocated", "ray.num_cpus=1",
                   cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("selflengthen: error:")]
    assert len(lines) == 1 and "rl.train.generation=transformers" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (out / "colocated").exists()
