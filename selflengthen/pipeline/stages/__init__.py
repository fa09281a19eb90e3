"""One module per stage of a Self-Lengthen iteration: augment, generate, extend, curate;
synth picks how the longer responses are made (`loop.synth`: extend, or AgentWrite,
LongWriter's plan-then-write (selflengthen.agentwrite), or both); training is
selflengthen.training.sft, driven by the loop. Each has a pure core over lists (tested with
a fake engine) and a `run` function (config, iteration paths, engine) -> output paths that
reads and writes the artifacts."""
