"""Output strategies: one model output in, one AiCOCO document out."""

from aicoco.strategies.base import OutputStrategy
from aicoco.strategies.classification import ClassificationStrategy
from aicoco.strategies.detection import DetectionStrategy
from aicoco.strategies.regression import RegressionStrategy
from aicoco.strategies.segmentation import SegmentationStrategy

__all__ = [
    "ClassificationStrategy",
    "DetectionStrategy",
    "OutputStrategy",
    "RegressionStrategy",
    "SegmentationStrategy",
]
