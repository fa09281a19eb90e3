"""The one step contract of every verb: a finished step is reused only when everything that
made it is what is asked now.

A step (a stage of the loop's iteration, one of finalize's, dpo's, agentwrite's or eval's)
records in its manifest the plain settings it was made with (`made_with`: its typed
settings slice, and what reaches it beside the slice: sampling, quality rules, seed, the
model and adapters, the digests of its input files) and their digest (`settings_hash`).
On the next invocation `reusable` compares them with what is asked now:

  - the same: the step is reused (skipped, or resumed from its checkpoint);
  - different: refused in one line that names the changed keys and the ways out (the
    settings it was made with, another output folder, or `redo=<step>`);
  - `redo=<step>` names this step or one before it: the step is redone (with a log line
    saying why) instead of refused, as are the steps after it that were made otherwise.

A manifest from before `made_with` was recorded keeps today's rule: a recorded digest is
compared with the one computed the old way (`legacy`); a manifest with no digest is reused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel

from selflengthen.core.errors import UserError
from selflengthen.store import artifacts

log = logging.getLogger("selflengthen")


def plain(value: Any) -> Any:
    """Typed settings (pydantic groups, dataclasses), paths, tuples, and dicts of them, as the
    plain JSON values a manifest holds."""
    if isinstance(value, BaseModel):
        return plain(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def digest(made_with: Any) -> str:
    """The settings hash of a plain settings dict (artifacts.config_hash of its plain form)."""
    return artifacts.config_hash(plain(made_with))


def file_digest(path: Path | str | None) -> str | None:
    """A short sha256 of a file's bytes (None when there is no such file): an input's content."""
    if path is None or not Path(path).is_file():
        return None
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def changed_keys(before: Any, now: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two plain settings dicts, sorted."""
    if isinstance(before, dict) and isinstance(now, dict):
        return sorted(key for k in set(before) | set(now)
                      for key in changed_keys(before.get(k), now.get(k), f"{prefix}{k}."))
    return [] if before == now else [prefix.rstrip(".") or "(the whole record)"]


@dataclass(frozen=True)
class Step:
    """One step of a verb's invocation. `record` is the JSON file that holds what made it
    (the step's manifest, or a marker written when its work began); `made_with` the plain
    settings it computes with now; `rename` the override that writes elsewhere (name=NEW);
    `legacy`: {manifest key: value} an older manifest without made_with must hold."""
    verb: str
    name: str
    folder: Path
    record: Path
    made_with: dict
    rename: str
    legacy: dict = field(default_factory=dict)

    def fields(self) -> dict:
        """What the step's manifest records (merge into it): the plain settings and their hash."""
        made = plain(self.made_with)
        return {"made_with": made, "settings_hash": digest(made)}

    def mark(self) -> None:
        """Record what the step's work is being made with (before it starts, beside its checkpoints)."""
        artifacts.write_json(self.record, self.fields())


def changes(step: Step) -> list[str] | None:
    """The keys that differ from what made the step's record ([] when the same); None when
    there is no record. A record from before made_with names no keys when its digest differs."""
    if not step.record.exists():
        return None
    recorded = artifacts.read_json(step.record)
    made = plain(step.made_with)
    if "made_with" in recorded:
        return changed_keys(recorded["made_with"], made)
    differing = [key for key, value in step.legacy.items() if key in recorded and recorded[key] != value]
    return ["(unnamed: its manifest recorded only a digest of them)"] if differing else []


def reusable(step: Step, redo: bool = False) -> bool:
    """Whether the step's record says it was made with what is asked now. No record: False.
    Made otherwise: a UserError naming the changed keys, or with `redo` (the invocation's
    redo= names this step or an earlier one) False, after a log line saying it is redone."""
    changed = changes(step)
    if changed is None:
        return False
    if not changed:
        return True
    if redo:
        log.warning("%s: redoing the %s step in %s (made with other settings: %s)", step.verb, step.name,
                    step.folder, ", ".join(changed))
        step.record.unlink(missing_ok=True)
        return False
    raise UserError(refusal(step, changed))


def reused(step: Step, redo: set[str] | frozenset = frozenset()) -> dict | None:
    """The step's record when it is reusable (`reusable`, redone when `redo` holds its name), else None."""
    return artifacts.read_json(step.record) if reusable(step, redo=step.name in redo) else None


def refusal(step: Step, changed: list[str]) -> str:
    """The one line every verb refuses a step made with other settings with."""
    shown = ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
    return (f"{step.verb}'s {step.name} step in {step.folder} was made with other settings (changed: {shown}); "
            f"rerun with the settings it was made with, write elsewhere with {step.rename}, or pass "
            f"redo={step.name} to redo it and the steps after it")


def redo_set(verb: str, order: Sequence[str], redo: str | None) -> set[str]:
    """The steps `redo=<step>` lets this invocation redo: that step and the ones after it in
    the verb's order (empty without redo=). A name that is no step of the verb is refused."""
    if not redo:
        return set()
    if redo not in order:
        raise UserError(f"redo={redo} is not a step of {verb}; choose one of {', '.join(order)} "
                        f"(it redoes that step and the steps after it)")
    return set(order[order.index(redo):])
