"""Prefect flows: thin tasks over `curation`, `prevad` and `lagovad` functions."""
