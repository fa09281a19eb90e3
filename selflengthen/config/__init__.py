"""The config's types (every key, its type, range and default, the verbs' settings: one module
per concern, all re-exported by schema.py, the one place callers import them from), where the
shipped YAML is and composing it (files.py), a feature's own rules (features.py) and
a run's saved config and method (saved.py). Above core only: every layer may read its settings types."""
from selflengthen.config.features import FeatureCheck
from selflengthen.config.saved import saved_config, saved_method
from selflengthen.config.schema import SYNTHS

__all__ = ["SYNTHS", "FeatureCheck", "saved_config", "saved_method"]
