"""Generation backends behind one small interface: the protocol and sampling settings (``base``),
transformers ``generate`` (``hf``), a vLLM engine (``vllm``), and the choice between them (``factory``,
by the rules of ``hardware``)."""

from agents.backends.base import Backend, SamplingParams
from agents.backends.factory import BACKEND_NAMES, make_backend
from agents.backends.hf import HFBackend

__all__ = ["BACKEND_NAMES", "Backend", "HFBackend", "SamplingParams", "make_backend"]
