"""Worker processes: one GGUF model (or a stand-in) served over OpenAI's HTTP API on loopback."""

__all__: list[str] = []
