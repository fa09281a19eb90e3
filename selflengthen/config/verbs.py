"""The verbs of the command line, one row each: the one table that cli.py (dispatch, the
usage text, the output folder check, a sweep's jobs) and schema.VERBS (each verb's typed
settings) read.

A verb is its module under selflengthen/commands/ with an entry function, its conf file
(conf/<config>.yaml, for a verb that takes Hydra overrides), and one row here. The entry
function of a Hydra verb takes the composed config and runs as the Hydra job (cli.py wraps
it: a user error is one line and exit 2, Ctrl-C says what is kept); the entry of any other
verb takes the command line's remaining arguments. Plain data only: the config layer
imports nothing of ours but core, and cli.py imports a verb's module only when it runs
(`--help`, a bad override and `inspect` answer without loading Ray, vLLM or torch).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verb:
    """One verb: `python -m selflengthen <name> ...`."""
    name: str
    # its lines of `--help`: the command (after `python -m selflengthen `), then any description lines
    usage: tuple[str, ...]
    # the module (selflengthen.commands.X) and its entry function, imported when the verb runs
    module: str
    entry: str = "main"
    # conf/<config>.yaml, composed (and checked once, up front) with the command line's overrides
    config: str | None = None
    # the verb's typed root: a class name of selflengthen.config.schema, defined in or imported by
    # config/roots.py, which builds schema.VERBS from these rows
    settings: str | None = None
    # takes Hydra overrides and runs as a Hydra job (entry(cfg)); else entry(argv)
    hydra: bool = True
    # the key that moves the verb's output folder (Hydra creates its log folder under it first)
    output_key: str | None = None
    # what an interrupted invocation keeps (Ctrl-C, SIGTERM): "... are kept, run the same command to resume"
    kept: str = "nothing was changed"
    # the first argument names a run (`finalize RUN ...`): it becomes run.name= (and paths.iterations_dir=)
    takes_run: bool = False
    # `-m`: each job of a sweep gets a run folder of its own under the sweep's folder
    sweeps: bool = False
    # `<name> --help` of a verb that is no Hydra job and has no argument parser of its own
    help: str | None = None


VERBS: tuple[Verb, ...] = (
    Verb("run", ("run [KEY=VALUE ...] [-m]   run the loop (Hydra overrides)",),
         "selflengthen.commands.run", config="config", settings="Config", output_key="paths.iterations_dir",
         kept="finished stages are kept", sweeps=True),
    Verb("eval", ("eval benchmark=NAME|[A,B] [data=PATH] [adapter=RUN/iter_K | predictions=FILE] [KEY=VALUE ...]",
                  "score a model on a long-output benchmark"),
         "selflengthen.commands.eval", config="eval", settings="EvalConfig", output_key="out_dir",
         kept="finished items are kept"),
    Verb("dpo", ("dpo [data=PATH] [adapter=RUN/iter_K] [dpo.samples_per_instruction=K] [KEY=VALUE ...]",
                 "preference-tune (DPO, LoRA) on sampled, scored long outputs"),
         "selflengthen.commands.dpo", config="dpo", settings="DpoConfig", output_key="out_dir",
         kept="finished samples, pairs and training are kept"),
    Verb("rl", ("rl [prompts=FILE|RUN/iter_K] [adapter=RUN/iter_K|FOLDER] [rl.train.steps=N] [KEY=VALUE ...]",
                "GRPO (LoRA) rewarded for the length asked, ending on its own, not repeating"),
         "selflengthen.commands.rl", config="rl", settings="RlConfig", output_key="out_dir",
         kept="finished trainer checkpoints are kept"),
    Verb("finalize", ("finalize RUN [step=collect|constrain|export|train|eval] [KEY=VALUE ...]",
                      "collect, length-constrain and export a run's data; train the final model"),
         "selflengthen.commands.finalize", config="finalize", settings="FinalizeConfig",
         kept="finished finalize steps are kept", takes_run=True),
    Verb("agentwrite", ("agentwrite input=FILE [adapter=RUN/iter_K] [agentwrite.mix.general=PATH] [KEY=VALUE ...]",
                        "AgentWrite (plan, then write paragraph by paragraph)", "+ a LongWriter-style training set"),
         "selflengthen.commands.agentwrite", config="agentwrite", settings="AgentWriteConfig", output_key="out_dir",
         kept="finished plans and paragraphs are kept"),
    Verb("inspect", ("inspect [RUN ...] [--iterations-dir DIR]   length (and eval) table + plot",),
         "selflengthen.commands.inspect", hydra=False),
    Verb("estimate", ("estimate [experiment=NAME] [estimate.tokens_per_s_per_gpu=N | estimate.from_run=RUN] "
                      "[KEY=VALUE ...]", "expected tokens, GPU-hours and memory per GPU of a run"),
         "selflengthen.commands.estimate", config="estimate", settings="EstimateConfig", hydra=False,
         kept="nothing was written",
         help="usage: python -m selflengthen estimate [KEY=VALUE ...]\n\nthe estimate.* keys (conf/estimate.yaml) "
              "and every run override; e.g. experiment=paper-qwen2-7b estimate.tokens_per_s_per_gpu=3000"),
)


def named(name: str) -> Verb | None:
    """The row of verb `name`, or None."""
    return next((v for v in VERBS if v.name == name), None)
