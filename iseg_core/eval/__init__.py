"""The field's evaluation protocol: click simulator, metrics, dataset readers, the loop and its CLI."""
from .clicker import next_click
from .datasets import DatasetError, Sample, open_dataset
from .interactions import first_interaction, simulate_box, simulate_contour, simulate_scribble
from ..geometry import ZoomIn
from .loop import ObjectEvaluator, ObjectRun, sat_latency
from .metrics import boundary_band, boundary_iou, iou, noc, summarize

__all__ = [
    "DatasetError", "ObjectEvaluator", "ObjectRun", "Sample", "ZoomIn", "boundary_band", "boundary_iou",
    "first_interaction", "iou", "next_click", "noc", "open_dataset", "sat_latency", "simulate_box",
    "simulate_contour", "simulate_scribble", "summarize",
]
