"""The embedded Ollama-compatible LLM server (``qastream llm-server``)."""
