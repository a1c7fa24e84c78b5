"""Faust web views: the HTTP API."""
