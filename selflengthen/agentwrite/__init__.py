"""LongWriter's pipeline on our engines: the `agentwrite` verb (command.py) and the
LongWriter-style training set (mix.py). The plan-then-write chain itself is the library
stage `selflengthen.stages.agentwrite`, which the loop also runs (loop.synth)."""
