"""Prefect orchestration of the whole pipeline (``flows.pipeline``) and the UIs (``flows.ui``).

A single stage runs as its own flow run from the ``rare`` command (``rare.stageflow``); this package
imports rare, never the other way round.
"""
