"""Prefect flows: thin wrappers that chain rare's stages (all logic lives in src/rare)."""
