"""Changelog-backed tables and the single agent that writes them."""
