"""Reasoning enhancement: a VLM makes implicit semantics explicit before retrieval."""
