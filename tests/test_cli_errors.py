"""Bad input gets one clear line naming the problem and the fix, exit code 2, and no
traceback; nothing already computed is touched."""
from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import REPO, run_cli


def one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("selflengthen: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_missing_model_folder(tmp_path):
    line = one_error_line(run_cli("run", "model.path=./no/such/model", f"paths.iterations_dir={tmp_path}", cwd=REPO))
    assert "model.path='./no/such/model'" in line and "hub id" in line
    assert not (tmp_path / "tiny" / "config.yaml").exists() and not list(tmp_path.rglob("iter_*"))  # no run


def test_missing_seed_file(tmp_path):
    line = one_error_line(run_cli("run", f"seeds.path={tmp_path}/absent.jsonl", f"paths.iterations_dir={tmp_path}",
                                  cwd=REPO))
    assert "seeds.path" in line and "seeds.path=null" in line


def test_malformed_seed_file(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "Write a long essay on salt."}\n{"text": "wrong key"}\n')
    line = one_error_line(run_cli("run", f"seeds.path={seeds}", f"paths.iterations_dir={tmp_path}", cwd=REPO))
    assert "line 2" in line and "instruction" in line


def test_resuming_with_a_changed_method_is_refused(tmp_path):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["seed=0"])
    run_dir = tmp_path / "tiny"
    run_dir.mkdir()
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    (run_dir / "iter_1").mkdir()
    line = one_error_line(run_cli("run", "seed=1", "loop.extend.rounds=2", f"paths.iterations_dir={tmp_path}",
                                  cwd=REPO))
    assert "different config" in line and "seed" in line and "loop.extend.rounds" in line
    assert "run.name=" in line
    assert (run_dir / "iter_1").is_dir()  # the earlier work is untouched


def test_inspect_unknown_run(tmp_path):
    line = one_error_line(run_cli("inspect", "ghost", "--iterations-dir", str(tmp_path), cwd=REPO))
    assert "no run 'ghost'" in line


def test_unknown_command():
    assert "unknown command" in one_error_line(run_cli("train", cwd=REPO))


def test_bad_override_is_one_hydra_message_without_traceback():
    proc = run_cli("run", "itrations=4", cwd=REPO)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "itrations" in proc.stderr
