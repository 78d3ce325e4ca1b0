"""fusebench: knowledge fusion of LLMs (FuseLLM), its baselines, and their evaluation."""

__version__ = "0.1.0"
