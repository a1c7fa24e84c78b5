"""Development tools: the embedded stack, the Ollama-compatible LLM server, load arrivals,
threshold calibration."""
