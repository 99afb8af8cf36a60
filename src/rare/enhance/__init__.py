"""Reasoning enhancement: a VLM makes implicit semantics explicit before retrieval.

routing   which op an item gets (the paper's table, overridable in params.yaml)
prompts   versioned prompt templates (prompts/<version>/*.txt)
backends  standin | transformers | openai (vllm serve, SGLang, ...) behind one interface (backends/base.py)
checks    is an output usable? every rejection has a cause
cache     content-addressed item cache (SQLite)
engine    shards: read, route, cache, generate, store atomically; assemble the outputs
run       one side end to end with a pluggable shard mapper (threads, Prefect, Ray)
"""
