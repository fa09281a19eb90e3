"""The up-front checks of a verb's config and the typed settings built from it, once, at
the verb's entry (checks.py). Above the models (it looks at the model folder), below every
feature."""
from selflengthen.preflight.checks import composed, problems, settings, validate

__all__ = ["composed", "problems", "settings", "validate"]
