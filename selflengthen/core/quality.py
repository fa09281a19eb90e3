"""The quality check over per-language rules (core/text.py; built from loop.quality by
config.schema.Loop.quality_rules), tallying why responses fail. The config's defaults
reproduce the reference check exactly (algorithm.md 1.5); unit_mode, meta_match, cut and
meta_lines opt into our variants."""
from __future__ import annotations

from selflengthen.core.text import QualityRules, quality_problem


class QualityCheck:
    """Callable check that also tallies why responses fail, for metrics.json."""

    def __init__(self, rules: dict[str, QualityRules]):
        self.rules = rules
        self.checked = 0
        self.failures: dict[str, int] = {}

    def __call__(self, text: str, language: str, cut: bool = False) -> bool:
        """Whether text passes; `cut`: the engine stopped it at its token cap."""
        self.checked += 1
        problem = quality_problem(text, self.rules[language], language, cut)
        if problem:
            self.failures[problem] = self.failures.get(problem, 0) + 1
        return problem is None

    def summary(self) -> dict:
        failed = sum(self.failures.values())
        return {"checked": self.checked, "passed": self.checked - failed, "failures": dict(self.failures),
                "pass_rate": round((self.checked - failed) / self.checked, 4) if self.checked else None}
