"""The config: its schema (types and ranges of every key, schema.py) and the up-front checks
of a composed config (checks.py). Imports no feature module."""
from selflengthen.config.checks import (ADDED_METHOD_KEYS, EMBEDDED, EMBEDDED_SMOLLM2, EMBEDDED_TINY, METHOD_KEYS,
                                        load_seeds, method_config, missing_values, problems, saved_method, seed_rows,
                                        validate)

__all__ = ["ADDED_METHOD_KEYS", "EMBEDDED", "EMBEDDED_SMOLLM2", "EMBEDDED_TINY", "METHOD_KEYS", "load_seeds",
           "method_config", "missing_values", "problems", "saved_method", "seed_rows", "validate"]
