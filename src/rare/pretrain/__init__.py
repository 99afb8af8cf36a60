"""CLIP-style pretraining of the dual encoder's vision tower on a generated alt-text corpus."""
