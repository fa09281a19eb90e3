"""Every name a user gives that becomes a folder is one safe path component (config/names.py):
`..`, a path through `..`, an absolute path, a separator, an empty or overlong name are
refused on every verb with one line naming the key and the rule, before anything is
created; explicit paths (paths.iterations_dir, out_dir, data=, ...) stay paths."""
from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from selflengthen.config import names, schema
from tests.conftest import run_cli

BAD = ["..", ".", "x/../../up", "../up", "/srv/x", "a/b", "a\\b", "", "a b", "x" * (names.MAX_LENGTH + 1)]
GOOD = ["mine", "my-run", "a.b_c-1", "run.2", "x" * names.MAX_LENGTH]
# every key that names a folder, on each verb that reads it (schema.VERBS types them SafeName)
NAME_KEYS = {"run": ["run.name", "sweep_name", "finalize.output_dir"],
             "eval": ["run.name", "sweep_name", "finalize.output_dir", "name"],
             "dpo": ["run.name", "sweep_name", "finalize.output_dir", "name"],
             "agentwrite": ["run.name", "sweep_name", "finalize.output_dir", "name"],
             "finalize": ["run.name", "sweep_name", "finalize.output_dir"],
             "estimate": ["run.name", "sweep_name", "finalize.output_dir"]}
VERB_NEEDS = {"eval": ["benchmark=heldout_tiny"], "agentwrite": ["input=x.jsonl"]}


def test_the_name_keys_are_those_the_schema_types_as_names():
    """Each verb's folder names are typed SafeName; a verb's own `name=` (rl's too, when it
    comes) is one of them."""
    for verb, model in schema.VERBS.items():
        keys = names.name_keys(model)
        assert set(NAME_KEYS.get(verb, NAME_KEYS["run"])) <= set(keys), verb
        assert ("name" in model.model_fields) == ("name" in keys), verb


@pytest.mark.parametrize("name", GOOD)
def test_a_folder_name_is_accepted(name):
    assert names.is_safe(name)
    assert schema.Run.model_validate({"name": name}).name == name


@pytest.mark.parametrize("verb", sorted(schema.VERBS))
@pytest.mark.parametrize("name", BAD)
def test_every_name_key_of_every_verb_refuses_what_is_not_one_folder_name(compose_config, verb, name):
    """Through the verb's typed config (what preflight reports) and the check that runs before
    Hydra creates its folders: one line each, naming the key and the rule."""
    for key in names.name_keys(schema.VERBS[verb]):
        cfg = compose_config(*VERB_NEEDS.get(verb, []), verb=verb)
        OmegaConf.update(cfg, key, name, force_add=True)
        container = OmegaConf.to_container(cfg, resolve=True)
        lines = [line for line in schema.problems(container, verb) if line.startswith(f"{key}=")]
        assert len(lines) == 1, (key, schema.problems(container, verb))
        if name:  # an empty run.name / finalize.output_dir is refused by their min_length first
            assert lines[0] == f"{key}={name!r} {names.RULE} (e.g. {key}={names.example(schema.VERBS[verb], key)})"
        early = names.name_problems(schema.VERBS[verb], lambda k: OmegaConf.select(cfg, k, default=None))
        assert early == [f"{key}={name!r} {names.RULE} (e.g. {key}={names.example(schema.VERBS[verb], key)})"]


@pytest.mark.parametrize("text", ["seed=0", "model.path=/a/b,seed=1", "loop.synth=extend", "x=[a b]", "..", "/",
                                  "k=" + "v" * 300])
def test_a_sweep_jobs_overrides_become_one_folder_name(text):
    from selflengthen.cli import _safe

    made = _safe(text)
    assert names.is_safe(made), made
    assert _safe("seed=0") == "seed-0" and _safe("a=1,b=2") == "a-1_b-2"  # the names sweeps have always had
    assert _safe("k=" + "v" * 300) != _safe("k=" + "v" * 299)  # cut long, still distinct


def _listing(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("verb, args", [
    ("run", ["run.name=../../somewhere"]),
    ("run", ["run.name=/srv/selflengthen-test-abs"]),
    ("run", ["-m", "seed=0,1", "sweep_name=../up"]),
    ("run", ["finalize.output_dir=../../up"]),
    ("eval", ["benchmark=heldout_tiny", "name=x/../../up"]),
    ("dpo", ["name=.."]),
    ("agentwrite", ["input=x.jsonl", "name=a/b"]),
    ("finalize", ["../up"]),  # RUN: a run folder (a documented path) or else a run name
])
def test_the_cli_refuses_an_unsafe_name_in_one_line_and_creates_nothing(tmp_path, verb, args):
    """The real command line, from a working folder two levels down: exit 2, one line naming
    the key, and nothing created anywhere under tmp_path (nor at the absolute path)."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    out = ["out_dir=out"] if verb in ("eval", "dpo", "agentwrite") else []
    paths = [f"paths.iterations_dir={work / 'iterations'}"]
    before = _listing(tmp_path)
    done = run_cli(verb, *args, *paths, *out, cwd=work)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("selflengthen: error: config: ") and names.RULE in lines[0], lines
    assert _listing(tmp_path) == before
    assert not os.path.exists("/srv/selflengthen-test-abs")
