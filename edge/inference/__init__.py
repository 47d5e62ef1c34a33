"""Inference: the TFLite runtime chain, preprocessing and the classifier."""

from edge.inference.classifier import Classifier, Scores
from edge.inference.runtime import RuntimeInfo, runtime_info

__all__ = ["Classifier", "Scores", "RuntimeInfo", "runtime_info"]
