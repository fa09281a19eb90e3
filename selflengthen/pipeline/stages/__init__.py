"""One module per stage of a Self-Lengthen iteration, each exporting a `Stage`
(pipeline/stage.py) that describes itself: its progress unit, its settings slice, whether
it needs the engine up, what it writes. augment, generate and extend (`synth.py`: the
longer responses, by extension or AgentWrite, `loop.synth`) run on the engine; curate,
guard and train (each adapter through training/ray_train.py) after it. Each has a pure core
over lists (tested with a fake engine) and a `run(settings slice, inputs)` body.

STAGES is the loop's one ordered list: the loop runs it in order, opening the engine for
each run of consecutive stages that need it; the metrics, the trackers and `estimate` read
their stage names from it. Adding a stage is its module and one line here.
"""
from selflengthen.pipeline.stages import augment, curate, generate, guard, synth, train

STAGES = (
    augment.STAGE,
    generate.STAGE,
    synth.STAGE,
    curate.STAGE,
    guard.STAGE,
    train.STAGE,
)


def names() -> list[str]:
    """Every stage's name, in the loop's order."""
    return [s.name for s in STAGES]


def engine_names() -> list[str]:
    """The stages that run on the engine (their usage is recorded in engine_usage.json)."""
    return [s.name for s in STAGES if s.engine]
