"""Relational storage: the schema, its migrations and the queries qastream runs."""
