"""llm-gateway: one OpenAI-compatible API over a pool of llama.cpp worker processes."""

__all__ = ["__version__"]

__version__ = "0.1.0"
