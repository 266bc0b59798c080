"""Generation backends behind one small interface (see ``agents.backends.base``)."""

from agents.backends.base import BACKEND_NAMES, Backend, SamplingParams, make_backend
from agents.backends.hf import HFBackend

__all__ = ["BACKEND_NAMES", "Backend", "HFBackend", "SamplingParams", "make_backend"]
