"""selflengthen: Self-Lengthen (Quan et al., 2024) on vLLM, TRL, Ray and Hydra -- a model
learns to write longer texts from its own generator and extender, iteration by iteration."""

__version__ = "0.1.0"
