"""selflengthen: Self-Lengthen (Quan et al., 2024) on vLLM, TRL, Ray and Hydra -- a model
learns to write longer texts from its own generator and extender, iteration by iteration.

The packages are layers, each importing only the ones below it (pyproject.toml's
[tool.importlinter] contracts; docs/house.md): core < store < models, engines < config <
training, evaluation, agentwrite, finalize, estimate, tracking < pipeline (the loop and its
stages) < commands (one module per verb) < cli."""

__version__ = "0.1.0"
