"""Engines: the only code that talks to a model. A stage hands an engine a batch of
`Request`s and one `Sampling`, and gets back one text per request, in order."""
from selflengthen.engines.base import Engine, Request, Sampling

__all__ = ["Engine", "Request", "Sampling"]
