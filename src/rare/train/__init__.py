"""Retriever training: M-BEIR pairs, in-batch contrastive loss with cross-rank gather, Lightning loop."""
