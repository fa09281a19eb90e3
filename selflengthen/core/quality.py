"""Per-language quality rules built from conf/ (loop.quality.<language>), and a check
that tallies why responses fail. The config's defaults reproduce the reference check
exactly (algorithm.md 1.5); unit_mode, meta_match and meta_lines opt into our variants."""
from __future__ import annotations

from omegaconf import DictConfig

from selflengthen.core.errors import UserError
from selflengthen.core.text import META_LINES, META_MATCHES, QualityRules, UNIT_MODES, quality_problem

_CHOICES = {"unit_mode": UNIT_MODES, "meta_match": META_MATCHES, "meta_lines": META_LINES}


def rule_problems(qcfg: DictConfig) -> list[str]:
    """Every bad value under loop.quality, each with its fix."""
    out = []
    for language, rule in qcfg.items():
        key = f"loop.quality.{language}"
        long_marks = [m for m in rule.terminal_marks if len(str(m)) != 1]
        if long_marks:
            out.append(f"{key}.terminal_marks has {long_marks}: only the text's last character is "
                       "compared, so give single characters (a text ending '...' passes through '.')")
        for name, choices in _CHOICES.items():
            if rule[name] not in choices:
                out.append(f"{key}.{name}={rule[name]!r} must be one of {list(choices)} "
                           f"({choices[0]!r} is the reference's behaviour)")
        for name in ("ngram", "meta_head_lines", "meta_tail_lines"):
            if not (isinstance(rule[name], int) and rule[name] >= (1 if name == "ngram" else 0)):
                out.append(f"{key}.{name}={rule[name]!r} must be a whole number >= {1 if name == 'ngram' else 0}")
    return out


def rules_from_config(qcfg: DictConfig) -> dict[str, QualityRules]:
    found = rule_problems(qcfg)
    if found:
        raise UserError("config: " + "; ".join(found))
    return {
        language: QualityRules(
            terminal_marks=tuple(str(m) for m in rule.terminal_marks),
            ngram=int(rule.ngram),
            meta_words=tuple(str(w) for w in rule.meta_words),  # case-sensitive, as in the reference
            meta_head_lines=int(rule.meta_head_lines),
            meta_tail_lines=int(rule.meta_tail_lines),
            unit_mode=str(rule.unit_mode),
            meta_match=str(rule.meta_match),
            meta_lines=str(rule.meta_lines),
        )
        for language, rule in qcfg.items()
    }


class QualityCheck:
    """Callable check that also tallies why responses fail, for metrics.json."""

    def __init__(self, rules: dict[str, QualityRules]):
        self.rules = rules
        self.checked = 0
        self.failures: dict[str, int] = {}

    def __call__(self, text: str, language: str) -> bool:
        self.checked += 1
        problem = quality_problem(text, self.rules[language], language)
        if problem:
            self.failures[problem] = self.failures.get(problem, 0) + 1
        return problem is None

    def summary(self) -> dict:
        failed = sum(self.failures.values())
        return {"checked": self.checked, "passed": self.checked - failed, "failures": dict(self.failures),
                "pass_rate": round((self.checked - failed) / self.checked, 4) if self.checked else None}
