"""Weave a length constraint into a query (algorithm.md 4): the model rewrites the query
so that it asks for the constraint in its own phrasing and placement, replacing any
length demand the query already has; a verifier checks the rewrite, and a template
insertion is the fallback (and the whole method when no engine is given).

Pure parts (prompt, parsing, verifier, template insertion) are tested with literal
strings; `constrain_all` is the only function that talks to the engine.
"""
from __future__ import annotations

import asyncio
import random
import re
from collections import Counter

from selflengthen.config import schema
from selflengthen.core.prompting import load_template, render, user
from selflengthen.engines import Request, Sampling
from selflengthen.finalize.constraints import Constraint, ConstraintConfig, draw_constraint, from_chinese_numeral

# --- numbers and length demands ----------------------------------------------------------

_ARABIC = r"\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?"
_CN_DIGITS = "零〇一二两三四五六七八九十百千万亿"
_NUM_EN = rf"(?:{_ARABIC})(?:\s*[kK](?![A-Za-z]))?"
_SPELLED = (r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|"
            r"fifty|a hundred|a thousand)(?:[- ](?:hundred|thousand))?")
_NUM_ZH = rf"(?:(?:{_ARABIC})\s*[千万kK]?|[{_CN_DIGITS}]+)"
_UNIT_EN = r"(?:words?|characters?|chars|pages?|paragraphs?|sentences?|lines?|tokens?)\b"
# 字 as a unit, not inside words such as 十字路口, 十字架, 八字胡, 一字不差
_UNIT_ZH = (r"(?:个)?(?:字(?![路架形军母典体幕迹符眼号条样句一不画谜帖据节段胡])|词|页|段落|自然段"
            r"|段(?=话|文字|内容|[，。；、,.;\s]|$))")
_JOIN_EN = r"\s*(?:-|–|—|to|and|or)\s*"
_JOIN_ZH = r"\s*(?:-|–|—|~|～|至|到)\s*"

DEMAND = {
    "en": re.compile(rf"(?<![\w.,])(?P<nums>(?:{_NUM_EN}|{_SPELLED})(?:{_JOIN_EN}(?:{_NUM_EN}|{_SPELLED}))?)"
                     rf"\s*-?\s*(?P<unit>{_UNIT_EN})", re.IGNORECASE),
    "zh": re.compile(rf"(?<![第\d.,])(?P<nums>{_NUM_ZH}(?:\s*[多余]?(?:个)?字?{_JOIN_ZH}{_NUM_ZH})?)"
                     rf"\s*[多余]?\s*(?P<unit>{_UNIT_ZH})"),
}
# what else a demand carries with it, for stripping it out of a query
_QUAL_EN = (r"(?:about|around|approximately|approx\.|roughly|some|at least|at most|no more than|no less than|"
            r"no fewer than|not more than|not less than|not to exceed|not exceed(?:ing)?|exceeding|exceed|more than|"
            r"less than|fewer than|over|under|up to|(?:a )?maximum of|(?:a )?minimum of|between|exactly|within)")
_PREP_EN = r"(?:in|with|of|using|within|for|to|that is|that's|which is)"
_TAIL_EN = r"(?:\s+(?:long|in length|or so|or more|or less|or fewer|at most|at least|max(?:imum)?|min(?:imum)?))?"
_QUAL_ZH = (r"(?:(?:字数|篇幅|全文|文章|长度|总字数)(?:要求|限制|控制|需要|须|需|应|应该|必须)?(?:在|为|是|约为)?[：:]?\s*)?"
            r"(?:大约|大概|约|不少于|不低于|不超过|不多于|不能少于|不要少于|不得少于|至少|最少|最多|多于|少于|大于|小于|超过|"
            r"低于|高于|控制在|在)?")
_SUFFIX_ZH = r"(?:左右|以上|以内|以下|之间|上下|内)?(?:的)?"
_LABEL_EN = (rf"(?:word count|word limit|length)\s*(?:[:：]|of|is|should be|must be)?\s*(?:{_QUAL_EN}\s+)?"
             rf"(?:{_NUM_EN})(?!\s*-?\s*{_UNIT_EN})")
STRIP = {
    "en": re.compile(rf"(?:\b{_PREP_EN}\s+)?(?:\b{_QUAL_EN}\s+)?{DEMAND['en'].pattern}{_TAIL_EN}|{_LABEL_EN}",
                     re.IGNORECASE),
    "zh": re.compile(rf"{_QUAL_ZH}{DEMAND['zh'].pattern}{_SUFFIX_ZH}"),
}
_ADJECTIVE_EN = re.compile(rf"\b(a|an)\s+(?:{_NUM_EN}|{_SPELLED})\s*-\s*(?:word|page|paragraph|sentence|line)\s+(\w)",
                           re.IGNORECASE)
_ANY_NUMBER = re.compile(rf"(?P<arabic>{_ARABIC})(?P<mult>\s*[kK](?![A-Za-z])|\s*[千万])?|(?P<cn>[{_CN_DIGITS}]+)")


def _value(token: str) -> int | None:
    """An Arabic number (thousands commas, k/千/万 multipliers) or a Chinese numeral."""
    token = token.strip()
    m = re.fullmatch(rf"({_ARABIC})\s*([kK千万]?)", token)
    if m:
        mult = {"": 1, "k": 1000, "K": 1000, "千": 1000, "万": 10000}[m.group(2)]
        return round(float(m.group(1).replace(",", "")) * mult)
    return from_chinese_numeral(token)


def numbers_in(text: str, language: str) -> set[int]:
    """Every number the text writes (Chinese numerals too, in Chinese)."""
    found = set()
    for m in _ANY_NUMBER.finditer(text):
        if m.group("cn") and language != "zh":
            continue
        value = _value(m.group(0) if m.group("arabic") else m.group("cn"))
        if value is not None:
            found.add(value)
    return found


def length_demands(text: str, language: str) -> list[tuple[str, set[int]]]:
    """Every "<number> <length unit>" in the text (ranges as one), with its numbers.
    Spelled English numbers count as demands with no number we could match; a count of
    characters under 50 is a cast of characters, not a length."""
    out = []
    for m in DEMAND["zh" if language == "zh" else "en"].finditer(text):
        parts = re.split(_JOIN_ZH if language == "zh" else _JOIN_EN, m.group("nums"), flags=re.IGNORECASE)
        values = {_value(re.sub(r"[多余个字]", "", p)) for p in parts}
        values.discard(None)
        if m.group("unit").lower().startswith("char") and values and max(values) < 50:
            continue
        out.append((m.group(0), values))
    return out


# --- the model rewrite ---------------------------------------------------------------------

def rewrite_request(query: str, constraint: Constraint, language: str) -> list[dict]:
    """The user turn asking the model to weave the constraint into the query."""
    template = load_template("zh" if language == "zh" else "en", "constrain")
    return user(render(template, query=query.strip(), constraint=constraint.text))


_LABEL = re.compile(r"^(?:edited request|rewritten request|request|query|修改后的请求|改写后的请求|请求)\s*[:：]\s*",
                    re.IGNORECASE)
_QUOTES = [('"', '"'), ("“", "”"), ("「", "」"), ("'", "'")]


def parse_rewrite(text: str) -> str:
    """The rewritten query from the model's answer: fences, a leading label and quotes
    around the whole answer removed."""
    out = text.strip()
    out = re.sub(r"^```\w*\n(.*)\n```$", r"\1", out, flags=re.DOTALL).strip()
    out = _LABEL.sub("", out).strip()
    for left, right in _QUOTES:
        once = out.count(left) == 2 if left == right else out.count(left) == out.count(right) == 1
        if len(out) > 2 and out.startswith(left) and out.endswith(right) and once:
            out = out[1:-1].strip()
    return out


_REPLY = re.compile(r"^(?:sure\b|certainly\b|of course\b|here is\b|here's\b|okay\b|ok\b|absolutely\b|"
                    r"i'd be happy|i would be happy|i can\b|好的|当然|以下是|下面是|这是|没问题|可以的)", re.IGNORECASE)
_LENGTH_WORD = {"en": re.compile(r"\bwords?\b|\blength\b|\blong\b", re.IGNORECASE),
                "zh": re.compile(r"字|篇幅")}


def verify_rewrite(original: str, rewritten: str, constraint: Constraint, language: str,
                   cfg: schema.RewriteVerify = schema.RewriteVerify()) -> str | None:
    """Why the rewrite is rejected ("<code>: <detail>"), or None when it is accepted.
    Codes: empty, reply, missing_number, other_length_demand, no_length_word, too_short,
    too_long."""
    lang = "zh" if language == "zh" else "en"
    text = rewritten.strip()
    if not text:
        return "empty: the rewrite is empty"
    if _REPLY.match(text):
        return f"reply: it reads as an answer, not a query ({text[:30]!r})"
    present = numbers_in(text, lang)
    for n in constraint.numbers:
        if n not in present:
            return f"missing_number: {n} is not in the rewrite"
    wanted = set(constraint.numbers)
    demands = length_demands(text, lang)
    for phrase, values in demands:
        if not values or not values <= wanted:
            return f"other_length_demand: {phrase!r}"
    if not demands and not _LENGTH_WORD[lang].search(text):
        return "no_length_word: the numbers are there but nothing says they are a length"
    if len(text) < cfg.min_length_ratio * len(original.strip()):
        return f"too_short: {len(text)} characters for a query of {len(original.strip())}"
    if len(text) > cfg.max_length_ratio * len(original.strip()) + len(constraint.text) + cfg.slack_chars:
        return f"too_long: {len(text)} characters for a query of {len(original.strip())}"
    return None


# --- the template fallback -----------------------------------------------------------------

_DANGLING_EN = re.compile(r"(?:\b(?:be|is|are|was|of|in|to|around|about|length|count|limit|must|should|shall|"
                          r"will|can|it|use|using|with)|[:：])\s*$", re.IGNORECASE)
_SENTENCES_EN = re.compile(r"(?<=[.!?])\s+")


def _tidy(text: str) -> str:
    text = re.sub(r"\(\s*\)|（\s*）|【\s*】", "", text)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([.,;:!?)])", r"\1", text)
    text = re.sub(r"[,;，；、]\s*([.!?。！？])", r"\1", text)
    text = re.sub(r"([，,；;])\s*[，,；;]", r"\1", text)
    text = re.sub(r"([。.！!？?])\s*[。.]", r"\1", text)
    text = re.sub(r"^\s*[,;:，；：。]\s*", "", text)
    return text.strip()


def _drop_demand(language: str):
    """A substitution that removes a match only when it holds a real length demand (or is
    a "word count: N" label)."""
    def drop(m: re.Match) -> str:
        real = length_demands(m.group(0), language) or not DEMAND[language].search(m.group(0))
        return "" if real else m.group(0)
    return drop


def _article(m: re.Match) -> str:
    """'a 1500-word essay' -> 'an essay': the article follows the next word."""
    article = "an" if m.group(2).lower() in "aeiou" else "a"
    return f"{article.capitalize() if m.group(1)[0].isupper() else article} {m.group(2)}"


def strip_length_demands(query: str, language: str) -> str:
    """The query with every length demand taken out (a sentence that only stated the
    length goes as a whole)."""
    if language == "zh":
        return _tidy(STRIP["zh"].sub(_drop_demand("zh"), query))
    text = _ADJECTIVE_EN.sub(_article, query)
    out = []
    for sentence in _SENTENCES_EN.split(text):
        rest = _tidy(STRIP["en"].sub(_drop_demand("en"), sentence))
        if rest == _tidy(sentence):
            out.append(sentence)
            continue
        bare = rest.rstrip(".!?").strip()
        if len(bare.split()) < 3 or _DANGLING_EN.search(bare):
            continue  # the sentence only stated the length
        out.append(rest)
    return _tidy(" ".join(out))


TEMPLATES = {
    "en": [("end", "{q} The piece should be {c} long."), ("end", "{q} Please make it {c}."),
           ("end", "{q} Aim for a length of {c}."), ("end", "{q} (Length: {c}.)"),
           ("start", "Please answer in {c}. {q}"), ("start", "Length requirement: {c}.\n\n{q}")],
    "zh": [("end", "{q}要求{c}。"), ("end", "{q}全文{c}。"), ("end", "{q}（篇幅：{c}）"),
           ("start", "篇幅要求：{c}。{q}"), ("start", "字数要求{c}。\n\n{q}")],
}
_TERMINAL = {"en": tuple(".!?)\"'”:"), "zh": tuple("。！？…”）；：.!?")}


def template_insert(query: str, constraint: Constraint, language: str, rng: random.Random) -> str:
    """The offline way: remove the query's own length demands, then put the constraint at
    its start or end with one of our templates."""
    lang = "zh" if language == "zh" else "en"
    q = strip_length_demands(query, lang) or query.strip()
    placement, template = rng.choice(TEMPLATES[lang])
    if placement == "end" and not q.endswith(_TERMINAL[lang]):
        q += "。" if lang == "zh" else "."
    return template.replace("{c}", constraint.text).replace("{q}", q)


# --- the batch -------------------------------------------------------------------------------

def _sampling(rewrite: schema.Rewrite) -> Sampling:
    return Sampling(temperature=rewrite.temperature, top_p=rewrite.top_p, top_k=rewrite.top_k,
                    repetition_penalty=rewrite.repetition_penalty, max_tokens=rewrite.max_tokens)


async def constrain_all(engine, rows: list[dict], finalize: schema.Finalize, seed: int, adapter: str | None = None
                        ) -> tuple[list[dict], dict]:
    """Constrain every row in the bounds (all model rewrites in flight together); rows
    out of the bounds keep their instruction as the query (or are dropped when
    finalize.keep_unconstrained is false). engine=None: template insertion for every row.
    Output rows gain query, constraint {type, text, numbers, window, chinese_numerals},
    rewrite ("model", "template" or "none") and rewrite_rejection (the verifier's reason)."""
    ccfg = ConstraintConfig.of(finalize.constraints)
    vcfg = finalize.rewrite.verify
    sampling = _sampling(finalize.rewrite)
    stats = {"rows": len(rows), "out_of_bounds": 0, "constrained": 0, "rewritten_by_model": 0,
             "template_fallback": 0, "fallback_reasons": Counter(), "types": Counter(), "languages": Counter()}

    async def one(row: dict) -> dict | None:
        lang = "zh" if row["language"] == "zh" else "en"
        if not ccfg.in_bounds(row["words"]):
            stats["out_of_bounds"] += 1
            if not finalize.keep_unconstrained:
                return None
            return {**row, "query": row["instruction"], "constraint": None, "rewrite": "none",
                    "rewrite_rejection": None}
        rng = random.Random(f"{seed}-constrain-{row['id']}")
        constraint = draw_constraint(row["words"], lang, rng, ccfg)
        request_seed = rng.getrandbits(31)
        reason = "offline: no engine"
        if engine is not None:
            done = await engine.complete(Request(rewrite_request(row["instruction"], constraint, lang),
                                                 adapter=adapter, seed=request_seed, key=str(row["id"])), sampling)
            query = parse_rewrite(done.text)
            reason = ("truncated: the rewrite hit max_tokens" if done.finish_reason != "stop"
                      else verify_rewrite(row["instruction"], query, constraint, lang, vcfg))
        if reason is None:
            how = "model"
            stats["rewritten_by_model"] += 1
        else:
            how, query = "template", template_insert(row["instruction"], constraint, lang, rng)
            stats["template_fallback"] += 1
            stats["fallback_reasons"][reason.split(":")[0]] += 1
        stats["constrained"] += 1
        stats["types"][constraint.type] += 1
        stats["languages"][lang] += 1
        return {**row, "query": query, "constraint": constraint.as_row(), "rewrite": how, "rewrite_rejection": reason}

    done = await asyncio.gather(*(one(r) for r in rows))
    out = [r for r in done if r is not None]
    for key in ("fallback_reasons", "types", "languages"):
        stats[key] = dict(sorted(stats[key].items()))
    return out, stats
