"""The bottom layer: pure helpers every other part may use and that import nothing of ours
but each other -- errors (UserError, the one-line failures), text (word counts, language,
cuts), quality (the per-language quality check), prompting (prompt templates and their
parsers), resample (drop-short), progress (progress bars)."""
