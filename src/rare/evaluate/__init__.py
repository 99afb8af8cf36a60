"""M-BEIR evaluation: cached embeddings, exact streamed search, hit-rate Recall@k, TREC run files."""
