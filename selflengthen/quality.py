"""Per-language quality rules built from conf/ (loop.quality.<language>)."""
from __future__ import annotations

from omegaconf import DictConfig

from selflengthen.text import QualityRules, quality_problem


def rules_from_config(qcfg: DictConfig) -> dict[str, QualityRules]:
    return {
        language: QualityRules(
            terminal_marks=tuple(rule.terminal_marks),
            ngram=int(rule.ngram),
            meta_words=tuple(w.lower() for w in rule.meta_words),
            meta_head_lines=int(rule.meta_head_lines),
            meta_tail_lines=int(rule.meta_tail_lines),
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
