"""Bad input, as a new user would give it: every value's type and range, the seeds file,
the model folder, the output folder, a full disk, an unknown key, a NaN loss, an empty
stage, an unreachable Ray cluster. Each is one line (the problem and its fix), exit 2,
no traceback, and nothing already computed is touched. Fast: nothing starts an engine."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from selflengthen import preflight
from selflengthen.core.errors import UserError
from selflengthen.evaluation import in_run
from selflengthen.pipeline import metrics
from selflengthen.pipeline.stages import train as train_stage
from selflengthen.store import artifacts
from selflengthen.store.seeds import load_seeds
from selflengthen.training import harness
from tests.conftest import REPO, run_cli, sha256
from tests.fakes import typed
from tests.test_cli_errors import one_error_line


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def earlier_run(tmp_path):
    """A run folder holding finished work, and a check that a failed command left it as it was."""
    run = tmp_path / "runs" / "tiny"
    (run / "iter_1").mkdir(parents=True)
    OmegaConf.save(compose_cfg(), run / "config.yaml", resolve=True)
    (run / "iter_1" / "instructions.jsonl").write_text('{"id": "x", "instruction": "Write."}\n')
    before = {p: sha256(p) for p in run.rglob("*") if p.is_file()}

    def untouched():
        after = {p: sha256(p) for p in run.rglob("*") if p.is_file() and "hydra" not in p.parts}
        assert after == before

    return SimpleNamespace(dir=tmp_path / "runs", untouched=untouched)


# --- every value's type and range (schema.py), reported at once ----------------------------

@pytest.mark.parametrize("override, expected", [
    ("loop.generate.drop_short=maybe", "loop.generate.drop_short='maybe' must be true or false"),
    ("loop.extend.drop_short=1", "loop.extend.drop_short=1 must be true or false"),
    ("loop.sampling.temperature=-1", "loop.sampling.temperature=-1 must be >= 0"),
    ("loop.sampling.top_p=0", "loop.sampling.top_p=0 must be > 0"),
    ("loop.sampling.top_p=1.5", "loop.sampling.top_p=1.5 must be <= 1"),
    ("loop.sampling.top_k=0", "loop.sampling.top_k=0 must be -1 (no top-k) or >= 1"),
    ("loop.sampling.max_tokens=ten", "loop.sampling.max_tokens='ten' must be a whole number"),
    ("loop.curate.line_keep_prob=1.5", "loop.curate.line_keep_prob=1.5 must be <= 1"),
    ("loop.generate.samples=2.5", "loop.generate.samples=2.5 must be a whole number"),
    ("train.rank=0", "train.rank=0 must be >= 1"),
    ("train.alpha=0", "train.alpha=0 must be > 0"),
    ("train.dropout=1", "train.dropout=1 must be < 1"),
    ("train.bf16=maybe", "train.bf16='maybe' must be true or false, or auto"),
    ("train.per_role.generator.learning_rate=-1", "train.per_role.generator.learning_rate=-1 must be > 0"),
    ("model.languages=[fr]", "model.languages has 'fr': must be en or zh"),
    ("model.dtype=fp8", "model.dtype='fp8' must be auto, float32"),
    ("engine.replicas=many", "engine.replicas='many' must be auto, or a whole number"),
    ("engine.cpu_memory_utilization=2", "engine.cpu_memory_utilization=2 must be <= 1"),
    ("ray.connect_timeout_s=0", "ray.connect_timeout_s=0 must be > 0"),
    ("agentwrite.filter.quality=yes", "agentwrite.filter.quality='yes' must be true or false"),
    ("eval.every_iteration=sometimes", "eval.every_iteration='sometimes' must be true or false"),
    ("iterations=two", "iterations='two' must be a whole number (e.g. iterations=4)"),
])
def test_each_bad_value_is_named_with_its_fix(override, expected):
    found = preflight.problems(compose_cfg(override))
    # engine.max_lora_rank is ${train.rank}; fr has no loop.quality rules either
    assert len(found) == (2 if override in ("train.rank=0", "model.languages=[fr]") else 1), found
    assert found[0].startswith(expected), found
    assert "(e.g. " in found[0] or "or >= 1" in found[0]  # every line says what a valid value looks like


@pytest.mark.parametrize("override", ["loop.sampling.top_k=-1", "loop.sampling.temperature=0", "train.bf16=false",
                                      "loop.sampling.top_p=1", "engine.replicas=2", "train.dropout=0"])
def test_edge_values_that_are_valid_pass(override):
    assert preflight.problems(compose_cfg(override)) == []


def test_every_bad_value_is_reported_at_once_through_the_cli(earlier_run):
    proc = run_cli("run", "loop.generate.drop_short=maybe", "loop.sampling.temperature=-1", "loop.sampling.top_p=0",
                   "loop.sampling.top_k=0", "train.alpha=-1", "model.languages=[fr]",
                   f"paths.iterations_dir={earlier_run.dir}", cwd=REPO)
    line = one_error_line(proc)
    assert "config has 7 problems" in line, proc.stderr  # fr also has no quality rules
    for key in ("drop_short", "temperature", "top_p", "top_k", "train.alpha", "model.languages", "loop.quality"):
        assert key in proc.stderr
    earlier_run.untouched()


def test_a_new_key_is_checked_by_declaring_it():
    from pydantic import Field, ValidationError

    from selflengthen.config import schema

    class Loud(schema.Group):
        volume: float = Field(ge=0, le=1, json_schema_extra={"eg": "0.5"})
        shout: bool

    with pytest.raises(ValidationError) as err:
        Loud.model_validate({"volume": 2, "shout": "maybe"})
    assert schema._lines(err.value.errors(include_url=False), "x.", Loud) == [  # noqa: SLF001
        ("x.volume", "x.volume=2 must be <= 1 (e.g. x.volume=0.5)"),
        ("x.shout", "x.shout='maybe' must be true or false")]


def test_max_tokens_against_the_context_read_from_the_model_config(tmp_path):
    model = fake_model(tmp_path / "m", context=2048)
    found = preflight.problems(compose_cfg(f"model.path={model}"))  # tiny's max_model_len is 8192
    assert found == [f"model.max_model_len (8192) is above the model's context (2048 positions in its config.json); "
                     f"set model.max_model_len=2048 or lower"]
    assert preflight.problems(compose_cfg(f"model.path={model}", "model.max_model_len=2048")) == []


# --- unknown keys and groups, and the output folder (before Hydra runs the job) ---------------

def test_unknown_key_is_one_line():
    line = one_error_line(run_cli("run", "loop.generate.drop_shrot=true", cwd=REPO))
    assert "unknown config key 'loop.generate.drop_shrot': check its spelling" in line and "+" not in line
    added = one_error_line(run_cli("run", "+loop.generate.drop_shrot=true", cwd=REPO))  # the schema refuses it
    assert "unknown config key 'loop.generate.drop_shrot': check its spelling" in added


def test_unknown_group_option_is_one_line_listing_the_options():
    line = one_error_line(run_cli("run", "model=gpt5", cwd=REPO))
    assert "Could not find 'model/gpt5'" in line and "tiny" in line and "qwen2.5-7b-instruct" in line


@pytest.mark.parametrize("verb, args", [("eval", ["benchmark=ruler", "judge=openai"]), ("run", ["judge=vllm"])])
def test_a_value_the_preset_leaves_unset_is_one_line_before_any_work(verb, args, tmp_path):
    proc = run_cli(verb, *args, f"paths.iterations_dir={tmp_path}", f"out_dir={tmp_path}/eval", cwd=REPO) \
        if verb == "eval" else run_cli(verb, *args, f"paths.iterations_dir={tmp_path}", cwd=REPO)
    line = one_error_line(proc)
    assert line == ("selflengthen: error: config: judge.model must be set (the chosen preset leaves it as ???); "
                    "add judge.model=VALUE to the command")
    assert not list(tmp_path.iterdir())  # refused before any work


def test_output_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = one_error_line(run_cli("run", f"paths.iterations_dir={blocker}/runs", cwd=REPO))
    assert f"cannot create the output folder {blocker}/runs" in line and "is a file, not a folder" in line
    assert "paths.iterations_dir=" in line
    assert blocker.read_text() == "not a folder"


def test_a_folder_only_the_filesystem_refuses_is_one_line():
    """/proc is a writable-looking folder (for root) where no folder can be made: only
    trying tells (it was a Hydra traceback)."""
    line = one_error_line(run_cli("run", "paths.iterations_dir=/proc/selflengthen-no-such-folder", cwd=REPO))
    assert "cannot create the output folder /proc/selflengthen-no-such-folder" in line
    assert "paths.iterations_dir=" in line


def test_unwritable_folder_is_named(tmp_path, monkeypatch):
    from selflengthen import cli

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root may write anywhere: simulate it
    assert cli.unwritable(tmp_path / "new" / "deeper") == f"{tmp_path} is not writable"


# --- the seeds file ----------------------------------------------------------------------------

SEED_CASES = {
    "empty": (b"\n\n", "is empty"),
    "not_utf8": (b'{"instruction": "Write a long essay."}\n{"instruction": "caf\xe9"}\n',
                 "is not UTF-8 text (line 2"),
    "not_object": (b'{"instruction": "Write a long essay."}\n["Write", "a list"]\n',
                   "line 2 is a JSON list, not an object"),
    "malformed": (b'{"instruction": "Write a long essay."}\n\n{"instruction": "broken\n',
                  "line 3 is not valid JSON"),
    "no_instruction": (b'{"prompt": "Write a long essay."}\n', 'line 1 has no "instruction"'),
    "not_string": (b'{"instruction": 42}\n', 'line 1: "instruction" must be a non-empty string, not 42'),
    "language": (b'{"instruction": "Ecris un long essai.", "language": "fr"}\n', "line 1: unknown language 'fr'"),
}


@pytest.mark.parametrize("case", sorted(SEED_CASES))
def test_bad_seeds_file(case, tmp_path):
    content, expected = SEED_CASES[case]
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_seeds(typed(compose_cfg(f"seeds.path={seeds}")).seeds, ["en"])
    assert str(err.value).startswith(f"seeds file {seeds}") and expected in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_bad_seeds_through_the_cli(tmp_path, earlier_run):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_bytes(SEED_CASES["not_utf8"][0])
    line = one_error_line(run_cli("run", f"seeds.path={seeds}", f"paths.iterations_dir={earlier_run.dir}", cwd=REPO))
    assert "is not UTF-8 text (line 2" in line and "save it as UTF-8" in line
    line = one_error_line(run_cli("run", f"seeds.path={tmp_path}", f"paths.iterations_dir={earlier_run.dir}",
                                  cwd=REPO))
    assert f"seeds.path='{tmp_path}' is not a file" in line
    earlier_run.untouched()


# --- the model ---------------------------------------------------------------------------------

def fake_model(folder, *, weights=True, tokenizer=True, template=True, context=8192):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": context}))
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
    if tokenizer:
        tok = {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"} if template else {}
        (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    return folder


@pytest.mark.parametrize("kind, expected", [
    ("no_config", "is a folder but not a model: it has no config.json"),
    ("no_weights", "has no weights (no *.safetensors or *.bin file)"),
    ("no_tokenizer", "has no tokenizer"),
    ("no_template", "its tokenizer has no chat template"),
])
def test_folder_that_is_not_a_chat_model(kind, expected, tmp_path):
    folder = tmp_path / "m"
    if kind == "no_config":
        folder.mkdir()
    else:
        fake_model(folder, weights=kind != "no_weights", tokenizer=kind != "no_tokenizer",
                   template=kind != "no_template")
    found = preflight.problems(compose_cfg(f"model.path={folder}"))
    assert len(found) == 1 and found[0].startswith(f"model.path={folder}") and expected in found[0], found


def test_bare_config_json_folder_through_the_cli(tmp_path, earlier_run):
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    proc = run_cli("run", f"model.path={folder}", f"paths.iterations_dir={earlier_run.dir}", cwd=REPO)
    line = one_error_line(proc)
    assert "config has 2 problems" in line and "has no weights" in proc.stderr and "has no tokenizer" in proc.stderr
    assert "pydantic" not in proc.stderr
    earlier_run.untouched()


def test_hub_id_not_cached_while_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    found = preflight.problems(compose_cfg("model.path=SomeOrg/Some-Model-7B"))
    assert found == ["model.path=SomeOrg/Some-Model-7B is not in the local Hugging Face cache and downloads are off "
                     "(HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set); download it first where there is a network: "
                     "hf download SomeOrg/Some-Model-7B (then copy ~/.cache/huggingface here), or give "
                     "a local model folder"]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # online: downloaded on use when the hub answers (a loopback listener stands in for it) ...
    import socket

    with socket.create_server(("127.0.0.1", 0)) as hub:
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{hub.getsockname()[1]}")
        assert preflight.problems(compose_cfg("model.path=SomeOrg/Some-Model-7B")) == []
    # ... and one line, at once, when it does not (a loopback port bound but not listening:
    # refused, and held so that no other process can start listening there meanwhile)
    with closed_port() as port:
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
        found = preflight.problems(compose_cfg("model.path=SomeOrg/Some-Model-7B"))
    assert found == [f"model.path=SomeOrg/Some-Model-7B is not in the local Hugging Face cache and the hub cannot be "
                     f"reached (http://127.0.0.1:{port}: Connection refused); download it first where there is a "
                     f"network: hf download SomeOrg/Some-Model-7B (then copy ~/.cache/huggingface "
                     f"here), or give a local model folder"]


def test_adapter_trained_on_another_base_model(tmp_path):
    model = fake_model(tmp_path / "base")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/models/other-base"}))
    proc = run_cli("eval", "benchmark=heldout_tiny", f"model.path={model}", f"adapter={adapter}",
                   f"out_dir={tmp_path / 'eval'}", cwd=REPO)
    line = one_error_line(proc)
    assert f"was trained on /models/other-base, not on model.path={model}" in line
    assert not list((tmp_path / "eval").glob("*/*.jsonl"))


# --- a full disk mid-write ----------------------------------------------------------------------

def _disk_fills(monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(artifacts.os, "fsync", full)


@pytest.mark.parametrize("writer", ["json", "jsonl", "append"])
def test_full_disk_keeps_the_previous_file_and_names_the_folder(writer, tmp_path, monkeypatch):
    path = tmp_path / "iter_1" / ("a.json" if writer == "json" else "a.jsonl")
    artifacts.write_jsonl(path, [{"id": "old"}])
    before = path.read_bytes()
    _disk_fills(monkeypatch)
    with pytest.raises(UserError) as err:
        {"json": lambda: artifacts.write_json(path, {"id": "new"}),
         "jsonl": lambda: artifacts.write_jsonl(path, [{"id": "new"}]),
         "append": lambda: artifacts.append_jsonl(path, [{"id": "new"}])}[writer]()
    assert f"no space left on the disk holding {path.parent}" in str(err.value)
    assert "rerun the same command to resume" in str(err.value)
    if writer != "append":  # an append may leave a torn tail, which the next read cuts
        assert path.read_bytes() == before
    assert not list(path.parent.glob("*.tmp"))


def test_other_os_errors_are_not_disguised(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError) as err:
        artifacts.write_json(tmp_path / "a.json", {})
    assert not isinstance(err.value, UserError) and err.value.errno == errno.EIO


# --- training: a NaN or infinite loss -----------------------------------------------------------

@pytest.mark.parametrize("logs", [{"loss": float("nan")}, {"loss": 1.0, "grad_norm": float("inf")}])
def test_non_finite_loss_stops_training(logs):
    guard = harness.finite_loss_guard({"learning_rate": 5e-4, "warmup_ratio": 0.1})
    control = SimpleNamespace(should_training_stop=False)
    guard.on_log(None, SimpleNamespace(global_step=7), control, logs={"loss": 2.0})
    assert not control.should_training_stop and guard.bad is None
    guard.on_log(None, SimpleNamespace(global_step=8), control, logs=logs)
    assert control.should_training_stop
    assert "at step 8" in guard.bad and "train.learning_rate (now 0.0005)" in guard.bad
    assert "the previous adapter is kept" in guard.bad


# --- a stage that accepted nothing -------------------------------------------------------------

def test_zero_items_names_the_filter_and_its_rejections(tmp_path):
    it = artifacts.IterationPaths(tmp_path / "iter_1", 1)
    artifacts.write_json(it.stage_manifest("augment"), {"counts": {"instructions": 0, "drawn": 240,
                                                                   "rejected_words": 200, "rejected_duplicate": 30,
                                                                   "rejected_judge": 10}})
    with pytest.raises(UserError) as err:
        train_stage.carry_adapter_over(it, "generator", None)
    assert ("augment accepted 0 instructions of 240 drawn (200 outside loop.augment.min_words..max_words, "
            "30 duplicates, 10 refused by the judge)") in str(err.value)
    artifacts.write_json(it.stage_manifest("augment"), {"counts": {"instructions": 5}})
    artifacts.write_json(it.stage_manifest("generate"), {"counts": {"kept_after_drop_short": 3}})
    artifacts.write_json(it.stage_manifest("extend"), {"counts": {"kept_after_drop_short": 0, "attempts": 6,
                                                                  "quality": {"failures": {"ngram": 4}}}})
    assert metrics.why_empty(it).startswith("extend accepted 0 of 6 attempts")
    assert "{'ngram': 4}" in metrics.why_empty(it) and "loop.extend.min_growth" in metrics.why_empty(it)
    # loop.synth=agentwrite: a row was accepted, but its instruction kept no draft, so the extender has no data
    artifacts.write_json(it.stage_manifest("extend"), {"counts": {"kept_after_drop_short": 1, "attempts": 24}})
    artifacts.write_jsonl(it.extended, [{"id": "i1-en-3", "method": "agentwrite", "response": "A long text."}])
    with pytest.raises(UserError, match=r"the 1 accepted row\(s\) are AgentWrite texts whose instruction kept no "
                                        r"generator draft.*loop.synth=both"):
        train_stage.carry_adapter_over(it, "extender", None)


# --- an unreachable Ray cluster ----------------------------------------------------------------

@contextlib.contextmanager
def closed_port():
    """A loopback port bound but not listening, for the duration: a connection there is
    refused at once, and no other process can take the port meanwhile (a port closed
    again before use could be taken by a listener that answers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_unreachable_ray_address_fails_fast_naming_it(earlier_run):
    with closed_port() as port:
        address = f"127.0.0.1:{port}"
        proc = run_cli("run", f"ray.address={address}", "ray.connect_timeout_s=5",
                       f"paths.iterations_dir={earlier_run.dir}", cwd=REPO, timeout=120)
    line = one_error_line(proc)
    # fast: our own reachability check answered (refused at once), not ray.init's minutes of retries
    assert (f"cannot reach the Ray cluster at ray.address={address} within ray.connect_timeout_s=5 s "
            "(Connection refused)") in line
    assert "ray.address=null" in line
    earlier_run.untouched()


def test_silent_ray_address_times_out_within_the_configured_bound():
    from selflengthen.engines import workers

    with socket.socket() as server:  # listening, with a full backlog: connections hang
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
                fillers.append(c)
            # the bound is the connection's own timeout (a hanging connect otherwise waits out
            # the kernel's SYN retries, minutes): shown by the timeout given and the reason
            real, timeouts = socket.create_connection, []

            def connect(address, timeout=None, *args, **kwargs):
                timeouts.append(timeout)
                return real(address, timeout, *args, **kwargs)

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(workers.socket, "create_connection", connect)
                with pytest.raises(UserError) as err:
                    workers.check_reachable(f"ray://127.0.0.1:{port}", 1.0)
            assert timeouts == [1.0]
            assert f"ray.address=ray://127.0.0.1:{port} within ray.connect_timeout_s=1 s (timed out)" in str(err.value)
        finally:
            for c in fillers:
                c.close()


def test_ray_address_auto_without_a_cluster_fails_at_once_naming_it(earlier_run, tmp_path):
    """Ray's own "auto" would look for any Ray process on the node (another user's local
    instance) or fail with a message naming neither the key nor the fix."""
    env = {"RAY_ADDRESS": "", "RAY_TMPDIR": str(tmp_path / "no-cluster-here")}  # no `ray start` on this node
    proc = run_cli("run", "ray.address=auto", "ray.connect_timeout_s=5", f"paths.iterations_dir={earlier_run.dir}",
                   cwd=REPO, env=env, timeout=120)
    line = one_error_line(proc)
    # at once: the message is our own check's (no address to try), not ray.init's after its retries
    assert "ray.address=auto found no running Ray cluster" in line
    assert str(tmp_path / "no-cluster-here" / "ray" / "ray_current_cluster") in line
    assert "ray start --head" in line and "ray.address=null" in line
    earlier_run.untouched()


def test_ray_address_auto_of_a_stopped_cluster_times_out_naming_the_address(tmp_path, monkeypatch):
    from selflengthen.engines import workers

    monkeypatch.setenv("RAY_ADDRESS", "")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with closed_port() as port:
        address = f"127.0.0.1:{port}"
        (tmp_path / "ray").mkdir()
        (tmp_path / "ray" / "ray_current_cluster").write_text(address + "\n")  # left by a cluster since stopped
        with pytest.raises(UserError) as err:
            workers.check_reachable("auto", 2.0)
        # at once: refused by the port, not waited out
        assert f"cannot reach the Ray cluster at ray.address=auto ({address}, from {tmp_path}/ray/ray_current_cluster) " \
               "within ray.connect_timeout_s=2 s (Connection refused)" in str(err.value)
        monkeypatch.setenv("RAY_ADDRESS", address)  # RAY_ADDRESS wins, as in Ray
        with pytest.raises(UserError, match=rf"ray.address=auto \({address}, from RAY_ADDRESS\)"):
            workers.check_reachable("auto", 2.0)


# --- the other groups (finalize, judge, tracking) and the verbs' own keys: typed too ----------

VERB_OF = {"config": "run", "eval": "eval", "dpo": "dpo", "agentwrite": "agentwrite", "finalize": "finalize"}


def compose_verb(verb: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=verb, overrides=list(overrides))


@pytest.mark.parametrize("verb, overrides, expected", [
    ("finalize", ["finalize.extra_per_language=-1"], "finalize.extra_per_language=-1 must be >= 0 (e.g. "),
    ("config", ["finalize.extra_per_language=some"], "finalize.extra_per_language='some' must be a whole number"),
    ("finalize", ["finalize.keep_unconstrained=sometimes"], "finalize.keep_unconstrained='sometimes' must be true or"),
    ("finalize", ["finalize.training.method=qlora"], "finalize.training.method='qlora' must be lora or full"),
    ("finalize", ["finalize.training.learning_rate=0"], "finalize.training.learning_rate=0 must be > 0"),
    ("finalize", ["finalize.constraints.min_words=many"], "finalize.constraints.min_words='many' must be a whole"),
    ("finalize", ["finalize.constraints.units=[{words: 0, prob: 1.0}]"],
     "finalize.constraints.units[0].words=0 must be >= 1 (e.g. finalize.constraints.units[0].words=1000)"),
    ("finalize", ["finalize.constraints.type_probs.about=1.5"], "finalize.constraints.type_probs.about=1.5 must be <= 1"),
    ("finalize", ["finalize.constraints.zh_numeral_prob=-0.1"], "finalize.constraints.zh_numeral_prob=-0.1 must be >= 0"),
    ("finalize", ["finalize.rewrite.top_p=0"], "finalize.rewrite.top_p=0 must be > 0"),
    ("finalize", ["finalize.rewrite.top_k=0"], "finalize.rewrite.top_k=0 must be -1 (no top-k) or >= 1"),
    ("finalize", ["finalize.rewrite.adapter=critic"], "finalize.rewrite.adapter='critic' must be generator or extender"),
    ("finalize", ["finalize.rewrite.verify.slack_chars=-5"], "finalize.rewrite.verify.slack_chars=-5 must be >= 0"),
    ("finalize", ["step=deploy"], "step='deploy' must be all, collect, constrain, export, train or eval"),
    ("dpo", ["dpo.samples_per_instruction=1"], "dpo.samples_per_instruction=1 must be >= 2 (e.g. "),
    ("dpo", ["dpo.pairing=random"], "dpo.pairing='random' must be best_vs_worst or all"),
    ("dpo", ["dpo.train.warmup_ratio=2"], "dpo.train.warmup_ratio=2 must be <= 1"),
    ("dpo", ["dpo.train.max_steps=0"], "dpo.train.max_steps=0 must be >= 1"),
    ("eval", ["limit=0"], "limit=0 must be >= 1"),
    ("eval", ["languages=[fr]"], "languages has 'fr': must be en or zh"),
    ("eval", ["max_tokens=lots"], "max_tokens='lots' must be a whole number"),
    ("eval", ["judge=vllm", "judge.temperature=-1"], "judge.temperature=-1 must be >= 0"),
    ("eval", ["judge=openai", "judge.max_concurrency=0"], "judge.max_concurrency=0 must be >= 1"),
    ("agentwrite", ["limit=ten"], "limit='ten' must be a whole number"),
    ("config", ["tracking=wandb", "tracking.wandb.mode=loud"], "tracking.wandb.mode='loud' must be offline, online"),
    ("config", ["tracking=mlflow", "tracking.mlflow.experiment=''"], "tracking.mlflow.experiment='' must not be empty"),
])
def test_each_bad_value_of_the_other_groups_is_named(verb, overrides, expected):
    found = preflight.problems(compose_verb(verb, *overrides), *([in_run.CONFIG_CHECK] if verb == "config" else []),
                            verb=VERB_OF[verb])
    assert len(found) == 1 and found[0].startswith(expected), found


@pytest.mark.parametrize("verb, overrides", [
    ("config", []), ("eval", []), ("dpo", []), ("agentwrite", []), ("finalize", []),
    ("config", ["model=smollm2-135m"]), ("config", ["model=qwen2.5-7b-instruct"]),
    ("eval", ["judge=openai"]), ("eval", ["judge=vllm"]), ("config", ["tracking=[tensorboard,mlflow,wandb]"]),
])
def test_the_shipped_configs_of_every_verb_pass(verb, overrides):
    container = OmegaConf.to_container(compose_verb(verb, *overrides), resolve=True)
    from selflengthen.config import schema

    assert schema.problems(container, VERB_OF[verb]) == []


def test_bad_finalize_values_through_the_cli_before_any_work(earlier_run):
    proc = run_cli("finalize", "tiny", f"paths.iterations_dir={earlier_run.dir}", "finalize.extra_per_language=-1",
                   "finalize.train=maybe", cwd=REPO)
    line = one_error_line(proc)
    assert "config has 2 problems" in line, proc.stderr
    assert "finalize.extra_per_language=-1 must be >= 0" in proc.stderr
    assert "finalize.train='maybe' must be true or false" in proc.stderr
    earlier_run.untouched()
    assert not (earlier_run.dir / "tiny" / "final").exists()
