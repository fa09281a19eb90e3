"""Engines: the only code that talks to a model. Each implements the contract in
`base.py`: one async `complete(request, sampling)` per request; a batch is a gather."""
from selflengthen.engines.base import (Completion, Engine, Request, Sampling, UsageMeter, complete_all, merge_usage,
                                       run_batch, usage_delta)

__all__ = ["Completion", "Engine", "Request", "Sampling", "UsageMeter", "complete_all", "merge_usage", "run_batch",
           "usage_delta"]
