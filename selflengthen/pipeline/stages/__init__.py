"""One module per stage of a Self-Lengthen iteration: augment, generate, extend, curate,
train; synth picks how the longer responses are made (`loop.synth`: extend, or agentwrite,
LongWriter's plan-then-write, or both). Each has a pure core over lists (tested with a
fake engine) and a `run` function (config, iteration paths, engine) -> output paths that
reads and writes the artifacts."""
