"""Clients with a lifecycle (Faust services): the LLM, the scorer, storage and the cache."""
