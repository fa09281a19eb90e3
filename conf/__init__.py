"""The shipped Hydra configs. This folder stays at the repository's top level; the wheel (and an
editable install) carries it as the package `selflengthen.conf` (pyproject.toml maps it), where
selflengthen/config/files.py finds it through importlib.resources."""
