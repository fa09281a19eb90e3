"""`python -m selflengthen estimate`: the expected tokens, GPU-hours and per-GPU memory of a
run, from its config and stated assumptions (the verb, selflengthen/commands/estimate.py,
joins tokens.py, memory.py, arch.py and measured.py)."""
