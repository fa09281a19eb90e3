"""The config: its schema (types and ranges of every key, schema.py), the up-front checks of
a composed config (checks.py) and where the shipped config files are (files.py). Imports no
feature module."""
from selflengthen.config.checks import (FeatureCheck, missing_values, problems, saved_method, settings,
                                        validate)
from selflengthen.config.schema import SYNTHS

__all__ = ["SYNTHS", "FeatureCheck", "missing_values", "problems", "saved_method", "settings", "validate"]
