"""rare: reasoning-augmented representations for multimodal retrieval on M-BEIR-format data."""

__version__ = "0.1.0"
