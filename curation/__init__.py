"""Curation stages of PreVAD: retrieval, acquisition, trimming, description, judging.

Each stage is a pure function over `prevad.records` records so that it can be called and tested
without Prefect; the Prefect flows in `flows/` are thin wrappers around it.
"""
