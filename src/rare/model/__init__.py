"""The retriever shared by training and evaluation (UniIR CLIP_SF-style score-level fusion).

    from rare.model import EncodeInput, load_retriever
    retriever = load_retriever(model_dir, device="cpu")
    batch = retriever.collator()([EncodeInput("a red circle", image), EncodeInput("", image)])
    emb = retriever(batch)   # [B, D] float32, L2-normalised
"""

from rare.model.io import load_retriever, save_retriever
from rare.model.preprocess import Collator, EncodeInput, preprocess_image
from rare.model.retriever import Retriever, build_retriever

__all__ = ["Collator", "EncodeInput", "Retriever", "build_retriever", "load_retriever", "preprocess_image",
           "save_retriever"]
