"""Between curate and train: is the iteration's kept data more degenerate than the previous
iteration's? (`loop.guard`, off by default.)

Self-lengthening has one known failure: a model that learns to be long by repeating,
padding and trailing off. With `loop.guard.check=true` this stage compares the judge-free
quality signals of the kept extended responses (core/signals.py: distinct-n, the repeated
n-gram rate, the compression ratio, the share cut at the token cap) with the previous
iteration's, and names each signal that moved the degenerate way by more than
`loop.guard.margin` (relative) in one line. With `loop.guard.stop=true` the run stops
before training on that data (everything computed so far is kept); resume with
`loop.guard.stop=false` to train on it anyway.

Longer texts repeat their common n-grams more, so distinct-n falls a little as a loop
lengthens: the margin (0.1 by default) is for a drop a reader would notice, not for that.
"""
from __future__ import annotations

import logging

from selflengthen.config import schema
from selflengthen.core import signals
from selflengthen.core.errors import UserError
from selflengthen.pipeline.metrics import kept_signals
from selflengthen.pipeline.stage import Inputs, Output, Stage
from selflengthen.store import artifacts

log = logging.getLogger("selflengthen")


def degenerate_moves(previous: dict, current: dict, margin: float) -> list[dict]:
    """The set-level signals that moved the degenerate way by more than `margin`."""
    return [{"signal": key, "previous": before, "current": after}
            for key, before, after in signals.worse_by(previous, current, margin) if "_seg" not in key]


def describe(k: int, moves: list[dict]) -> str:
    parts = [f"{m['signal']} {m['previous']:.3f} -> {m['current']:.3f}"
             + (f" ({m['current'] / m['previous'] - 1:+.0%})" if m["previous"] else "") for m in moves]
    return f"iteration {k}'s kept data is more degenerate than iteration {k - 1}'s: {', '.join(parts)}"


def run(settings: schema.Guard, inputs: Inputs) -> Output:
    """Compare this iteration's kept extended responses with the previous iteration's."""
    it = inputs.paths
    if not settings.check or it.k == 1:
        return Output(counts={"check": settings.check, "compared_with": None, "degenerate": []}, outputs=[])
    previous = it.root.parent / f"iter_{it.k - 1}" / it.extended.name
    current = kept_signals(artifacts.read_jsonl(it.extended))
    moves = degenerate_moves(kept_signals(artifacts.read_jsonl(previous)), current, settings.margin)
    if moves:
        line = describe(it.k, moves)
        if settings.stop:
            raise UserError(f"{line} (loop.guard.margin={settings.margin:g}); stopped before training on it. The "
                            f"data is kept in {it.root}: read it, then rerun with loop.guard.stop=false to train on "
                            "it anyway, or start another run with other settings (run.name=NEW_NAME)")
        log.warning("%s (loop.guard.margin=%g); training on it (loop.guard.stop=true stops here)", line,
                    settings.margin)
    return Output(counts={"check": True, "compared_with": it.k - 1, "degenerate": moves}, outputs=[])


STAGE = Stage("guard", unit="check", settings=lambda s: s.loop.guard, body=run)
