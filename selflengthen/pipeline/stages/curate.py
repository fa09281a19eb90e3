"""Stage 4: the SFT datasets of both roles (algorithm.md 1.4), in chat `messages` format.

generator: instruction -> extended response
extender:  extender prompt(instruction, degraded initial) -> extended response, where the
           degraded initial keeps each line of the initial response with probability
           `line_keep_prob`, joined by blank lines (it teaches the extender to add, not copy).

With loop.synth=agentwrite|both some "extended" rows are AgentWrite's (stages/synth.py):
their initial is the generator's draft for the same instruction, so the extender learns to
turn a draft into the planned long text; a row with no draft trains the generator only.
Each record keeps its row's `method` (extend | agentwrite).

Length hints (`length_hints`, 0 in the paper's loop): that share of the generator's rows,
drawn with the iteration's seed, ask for the response's own length, in finalize's constraint
forms and templates ("... Please make it around 600 words."; rounded to 100, 50 or 10 words
or characters, whichever keeps the response inside the hint's LonGen window). The paper adds
such constraints only to its final training set; in the loop they teach the generator to
write to a requested length as it learns to write longer, which a held-out set of
length-specified requests (heldout_writing) scores. The rest of the rows, and every extender
row, keep the bare instruction. The record names its hint (`length_hint`).
"""
from __future__ import annotations

import random

from selflengthen.config.schema import Curate
from selflengthen.core import prompting
from selflengthen.core.text import count_words, keep_lines
from selflengthen.finalize.constraints import ConstraintConfig, draw_constraint
from selflengthen.finalize.rewrite import template_insert
from selflengthen.pipeline.stage import Inputs, Output, Stage
from selflengthen.store import artifacts


def degrade(text: str, keep_prob: float, rng: random.Random) -> str:
    return "\n\n".join(keep_lines(text, keep_prob, rng))


HINT_UNITS = (100, 50, 10)  # words (characters in Chinese) a hint's lengths are rounded to


def hint_unit(words: int) -> int | None:
    """The largest unit of at most a third of the length, so that LonGen's window of every
    type of hint holds the response (about: within 20%; above L: up to 1.5L); None under 30."""
    return next((u for u in HINT_UNITS if 3 * u <= words), None)


def hinted(instruction: str, response: str, language: str, rng: random.Random) -> tuple[str, str | None]:
    """The instruction with the response's own length stated (finalize's constraint forms,
    in the paper's mix of types, and templates), and the hint's text; the bare instruction
    and None for a response under 30 words."""
    words = count_words(response)
    unit = hint_unit(words)
    if unit is None:
        return instruction, None
    constraint = draw_constraint(words, language, rng, ConstraintConfig(min_words=unit, max_words=10**9,
                                                                        units=(unit,), unit_probs=(1.0,)))
    return template_insert(instruction, constraint, language, rng), constraint.text


def sft_records(extended: list[dict], keep_prob: float, rng: random.Random, hints: float = 0.0,
                hint_rng: random.Random | None = None) -> tuple[list[dict], list[dict]]:
    generator, extender = [], []
    hint_rng = hint_rng or random.Random(0)
    for row in extended:
        answer = {"role": "assistant", "content": row["response"]}
        method = row.get("method", "extend")  # rows written before loop.synth existed are the extender's
        instruction, hint = row["instruction"], None
        if hints and hint_rng.random() < hints:
            instruction, hint = hinted(row["instruction"], row["response"], row["language"], hint_rng)
        record = {"id": row["id"], "method": method,
                  "messages": prompting.generator_request(instruction) + [answer]}
        if hint:
            record["length_hint"] = hint
        generator.append(record)
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
    generator, extender = sft_records(extended, settings.line_keep_prob, rng, settings.length_hints,
                                      random.Random(f"{inputs.seed}-length-hints-{paths.k}"))
    artifacts.write_jsonl(paths.sft("generator"), generator)
    artifacts.write_jsonl(paths.sft("extender"), extender)
    hinted_rows = sum(1 for r in generator if "length_hint" in r)
    return Output(counts={"generator": len(generator), "extender": len(extender), "length_hints": hinted_rows},
                  outputs=[paths.sft("generator"), paths.sft("extender")])


STAGE = Stage("curate", unit="row", settings=lambda s: s.loop.curate,
              body=run, writes=("sft/generator.jsonl", "sft/extender.jsonl"))
