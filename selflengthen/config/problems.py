"""The one-line problems of a composed config: `check`/`problems` validate it against the
verb's root and word each bad value as its key, the value, what it must be and an example
of a valid setting; `unknown_key` words a key the config does not have."""
from __future__ import annotations

from typing import get_args

from pydantic import BaseModel, ValidationError

from selflengthen.config.roots import VERBS
from selflengthen.config.training import Roles, Train


_KINDS = {
    "bool_type": "must be true or false",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "string_type": "must be a string (quote it)",
    "list_type": "must be a list, e.g. '[a,b]'",
    "dict_type": "must be a mapping",
    "model_type": "must be a group of keys",
    "missing": "is missing; set it",
}


def _members(ann) -> list[type[BaseModel]]:
    """The groups an annotation holds: itself, or those inside Optional[...], list[...], a union."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for arg in get_args(ann) for m in _members(arg)]


def _tagged(ann) -> dict[str, type[BaseModel]]:
    """A discriminated union's members by their `kind` (engine, judge), else {}."""
    out = {}
    for m in _members(ann):
        kind = m.model_fields.get("kind")
        if kind is not None and get_args(kind.annotation):
            out[get_args(kind.annotation)[0]] = m
    return out if len(out) > 1 else {}


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[tuple, object]:
    """An error's location without the tags pydantic adds for a discriminated union's member
    ('engine', 'openai', 'timeout' -> 'engine', 'timeout'), and its field's example."""
    model, out, example, i = root, [], None, 0
    while i < len(loc):
        part = loc[i]
        out.append(part)
        i += 1
        info = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        if isinstance(part, int):
            continue
        if info is None:
            model = None
            continue
        extra = info.json_schema_extra
        example = extra.get("eg") if isinstance(extra, dict) else None
        tags = _tagged(info.annotation)
        if tags and i < len(loc) and loc[i] in tags:
            model = tags[loc[i]]
            i += 1  # the tag
        else:
            members = _members(info.annotation)
            model = members[0] if members and not tags else None
    return tuple(out), example


def _parts(loc: tuple) -> list:
    """An error's location without the names pydantic gives a union's members ('int',
    'literal[...]', 'constrained-int')."""
    return [p for p in loc if isinstance(p, int)
            or (isinstance(p, str) and p.isidentifier() and p not in ("int", "bool", "str", "float"))]


def _key(loc: tuple) -> str:
    """The dotted config key of an error's location: a bad element of a list is reported
    under the list's key; a key inside a list's element names its index (units[0].words)."""
    parts, key = _parts(loc), ""
    for i, p in enumerate(parts):
        if isinstance(p, int):
            if i == len(parts) - 1:
                break
            key += f"[{p}]"
        else:
            key += f".{p}" if key else p
    return key


def _what(err: dict) -> str:
    kind = err["type"]
    if kind == "literal_error":
        what = "must be " + err["msg"].removeprefix("Input should be ").replace("'", "")
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(err["ctx"].values()))
        what = f"must be {sign} {bound:g}" if isinstance(bound, float) else f"must be {sign} {bound}"
    elif kind in ("too_short", "string_too_short"):
        what = "must not be empty"
    else:
        what = _KINDS.get(kind, err["msg"].lower())
    return what


def unknown_key(key: str) -> str:
    """The one line for a key the config does not have (the command line's or a file's)."""
    return f"unknown config key '{key}': check its spelling (python -m selflengthen run --help shows every key)"


def _lines(errors: list[dict], prefix: str, root: type[BaseModel]) -> list[tuple[str, str]]:
    """One line per key (a union's alternatives are joined with "or")."""
    by_key: dict[str, list[dict]] = {}
    for err in errors:
        loc, example = _walk(tuple(err["loc"]), root)
        err = {**err, "loc": loc, "eg": example}
        by_key.setdefault(prefix + _key(loc), []).append(err)
    out = []
    for key, errs in by_key.items():
        first = errs[0]
        if first["type"] == "extra_forbidden":
            out.append((key, unknown_key(key)))
            continue
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            kinds = ", ".join(first["ctx"]["expected_tags"].replace("'", "").split(", "))
            tag = first["ctx"].get("tag", "null")
            out.append((f"{key}.kind", f"{key}.kind={tag!r} must be one of {kinds} (e.g. {key}={kinds.split(', ')[0]})"))
            continue
        if first["type"] == "value_error":  # our own validators: the message names the rule and the fix
            what = first["msg"].removeprefix("Value error, ")
            shown = "" if first["input"] is None else repr(first["input"])  # benchmark= is not set
            if key and what.startswith(key):  # the message names its keys itself
                out.append((key, what))
                continue
            out.append((key, f"{key}={shown} {what}" if key and not isinstance(first["input"], dict)
                            else (f"{key}: {what}" if key else what)))
            continue
        whats = list(dict.fromkeys(_what(e) for e in errs))
        what = whats[0] + "".join(", or " + w.removeprefix("must be ") for w in whats[1:])
        item = bool(_parts(first["loc"])) and isinstance(_parts(first["loc"])[-1], int)  # a bad element of a list
        shown = "" if first["type"] == "missing" else (f" has {first['input']!r}:" if item else f"={first['input']!r}")
        example = first["eg"]
        fix = f" (e.g. '{key}={example}')" if example and item else (f" (e.g. {key}={example})" if example else "")
        out.append((key, f"{key}{shown} {what}{fix}"))
    return out


def problems(container: dict, verb: str = "run") -> list[str]:
    """One line per bad value of the resolved config (a plain dict), or []."""
    return [line for _, line in check(container, verb)]


def check(container: dict, verb: str = "run") -> list[tuple[str, str]]:
    """(key, line) per bad value of the resolved config (a plain dict) as the verb reads it."""
    root = VERBS[verb]
    out = []
    try:
        root.model_validate(container)
    except ValidationError as err:
        out += _lines(err.errors(include_url=False), "", root)
    train = container.get("train")
    roles = train.get("per_role") if isinstance(train, dict) else None
    if isinstance(roles, dict):
        for role, over in roles.items():
            if isinstance(over, dict) and over and role in Roles.model_fields:
                try:
                    Train.model_validate({**train, "per_role": {}, **over})
                except ValidationError as err:
                    out += _lines([e for e in err.errors(include_url=False) if e["loc"] and e["loc"][0] in over],
                                  f"train.per_role.{role}.", Train)
    return out
