"""The finalize step (algorithm.md 1.4, 4): after the loop, collect every accepted
(instruction, extended response) of the run, give each query a length constraint its
response meets (drawn as the paper does, woven in by a model rewrite with a template
fallback), and export the pairs for TRL, LLaMA-Factory and `datasets`.

    rows, collected = collect(run_root)                                  # collect.py
    rows, constrained = await constrain_all(engine, rows, cfg, seed)     # rewrite.py
    manifest = export(rows, out_dir, card_info={...})                    # store/export.py

Parameters: conf/finalize/default.yaml.
"""
from selflengthen.finalize.collect import collect
from selflengthen.finalize.constraints import (Constraint, ConstraintConfig, draw_constraint, from_chinese_numeral,
                                               to_chinese_numeral)
from selflengthen.finalize.rewrite import (constrain_all, rewrite_request, strip_length_demands, template_insert,
                                           verify_rewrite)
from selflengthen.store.export import export

__all__ = ["collect", "Constraint", "ConstraintConfig", "draw_constraint", "to_chinese_numeral",
           "from_chinese_numeral", "export", "constrain_all", "rewrite_request", "strip_length_demands",
           "template_insert", "verify_rewrite"]
