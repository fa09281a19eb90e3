"""Stage 4: the SFT datasets of both roles (algorithm.md 1.4), in chat `messages` format.

generator: instruction -> extended response
extender:  extender prompt(instruction, degraded initial) -> extended response, where the
           degraded initial keeps each line of the initial response with probability
           `line_keep_prob`, joined by blank lines (it teaches the extender to add, not copy).

With loop.synth=agentwrite|both some "extended" rows are AgentWrite's (stages/synth.py):
their initial is the generator's draft for the same instruction, so the extender learns to
turn a draft into the planned long text; a row with no draft trains the generator only.
Each record keeps its row's `method` (extend | agentwrite).
"""
from __future__ import annotations

import random

from selflengthen.config.schema import Curate
from selflengthen.core import prompting
from selflengthen.core.text import keep_lines
from selflengthen.pipeline.stage import Inputs, Output, Stage
from selflengthen.store import artifacts


def degrade(text: str, keep_prob: float, rng: random.Random) -> str:
    return "\n\n".join(keep_lines(text, keep_prob, rng))


def sft_records(extended: list[dict], keep_prob: float, rng: random.Random) -> tuple[list[dict], list[dict]]:
    generator, extender = [], []
    for row in extended:
        answer = {"role": "assistant", "content": row["response"]}
        method = row.get("method", "extend")  # rows written before loop.synth existed are the extender's
        generator.append({"id": row["id"], "method": method,
                          "messages": prompting.generator_request(row["instruction"]) + [answer]})
        if not row["initial"]:
            continue
        draft = degrade(row["initial"], keep_prob, rng)
        extender.append({"id": row["id"], "method": method, "messages":
                         prompting.extender_request(row["instruction"], draft, row["language"]) + [answer]})
    return generator, extender


def run(settings: Curate, inputs: Inputs) -> Output:
    """Both roles' SFT datasets of iteration paths.k, from its extended rows (loop.curate.*)."""
    paths = inputs.paths
    extended = artifacts.read_jsonl(paths.extended)
    rng = random.Random(f"{inputs.seed}-curate-{paths.k}")
    generator, extender = sft_records(extended, settings.line_keep_prob, rng)
    artifacts.write_jsonl(paths.sft("generator"), generator)
    artifacts.write_jsonl(paths.sft("extender"), extender)
    return Output(counts={"generator": len(generator), "extender": len(extender)},
                  outputs=[paths.sft("generator"), paths.sft("extender")])


STAGE = Stage("curate", unit="row", settings=lambda s: s.loop.curate, body=run)
