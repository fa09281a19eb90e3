"""One module per stage of a Self-Lengthen iteration: augment, generate, extend, curate,
train. Each has a pure core over lists (tested with a fake engine) and a `run` function
(config, iteration paths, engine) -> output paths that reads and writes the artifacts."""
