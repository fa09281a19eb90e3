"""The one rule for every name a user gives that becomes a folder: `run.name`, `sweep_name`,
the `name=` of eval, dpo and agentwrite, and `finalize.output_dir`. A name is one path
component: letters, digits, `-`, `_` and `.`, not `.` or `..`, at most MAX_LENGTH
characters, so nothing a command writes lands outside the folder the user chose
(`paths.iterations_dir`, `out_dir`, the run's folder).

Keys documented as paths (`paths.iterations_dir`, `out_dir`, `data=`, `predictions=`,
`input=`, `seeds.path`, the RUN of `finalize` and `inspect`) are paths, not names, and are
not checked here.

`SafeName` is the annotated type the schema puts on each name field; `name_problems` checks
the same fields of a composed config before anything is created (Hydra makes its log
folder under `run.name` first), one line per bad name, worded as the schema words them."""
from __future__ import annotations

import re
from typing import Annotated, Any, get_args

from pydantic import AfterValidator, BaseModel
from pydantic_core import PydanticCustomError

MAX_LENGTH = 100
RULE = (f"must be one folder name: letters, digits, - _ . (not . or .., no /), "
        f"1 to {MAX_LENGTH} characters")
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def is_safe(name: object) -> bool:
    """Whether `name` is one safe path component (module docstring)."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_LENGTH and name not in (".", "..")
            and _NAME.fullmatch(name) is not None)


def _check(name: str) -> str:
    if not is_safe(name):
        raise PydanticCustomError("folder_name", RULE)
    return name


class _Marker:
    """Tells name_problems which fields hold names (the validator's metadata)."""


NAME_MARK = _Marker()
SafeName = Annotated[str, AfterValidator(_check), NAME_MARK]


def safe_name(text: str, fallback: str = "job") -> str:
    """`text` made into a safe name: runs of other characters become `-`; too long, it is
    cut and ends with a digest of the whole (so distinct texts stay distinct)."""
    import hashlib

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or fallback
    if name in (".", ".."):
        name = fallback
    if len(name) > MAX_LENGTH:
        name = f"{name[:MAX_LENGTH - 13]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    return name


def _holds_name(annotation: Any) -> bool:
    return any(m is NAME_MARK for m in getattr(annotation, "__metadata__", ())) or any(
        _holds_name(a) for a in get_args(annotation))


def name_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """The dotted keys of `model` (a verb's config type) typed SafeName, nested groups included."""
    keys = []
    for field, info in model.model_fields.items():
        annotation = info.annotation
        if any(m is NAME_MARK for m in info.metadata) or _holds_name(annotation):
            keys.append(prefix + field)
            continue
        groups = [a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(groups) == 1:
            keys += name_keys(groups[0], f"{prefix}{field}.")
    return keys


def name_problems(model: type[BaseModel], value_of) -> list[str]:
    """One line per name key of `model` whose value (`value_of(key)`, None when unset) is not
    a safe name: `run.name='../x' must be one folder name: ... (e.g. run.name=mine)`."""
    out = []
    for key in name_keys(model):
        value = value_of(key)
        if not isinstance(value, str) or is_safe(value):  # unset, or not a string: the schema says so
            continue
        out.append(f"{key}={value!r} {RULE} (e.g. {key}={example(model, key)})")
    return out


def example(model: type[BaseModel], key: str) -> str:
    """The key's example from the schema (its `eg`), else `my-name`."""
    *groups, last = key.split(".")
    for part in groups:
        info = model.model_fields[part]
        model = next(a for a in (info.annotation, *get_args(info.annotation))
                     if isinstance(a, type) and issubclass(a, BaseModel))
    extra = model.model_fields[last].json_schema_extra
    eg = extra.get("eg") if isinstance(extra, dict) else None
    return str(eg).split(" ")[0] if eg else "my-name"
