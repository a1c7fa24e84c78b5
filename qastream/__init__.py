"""qastream: an asynchronous LLM question-answering pipeline on Faust."""

__version__ = "0.1.0"
