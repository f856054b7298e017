"""Stand-ins for SAIC-IS's ``isegm.data`` package, which the reference folder lacks: only what its model and
predictor read of it (facts of isegm/data/interaction_type.py and contour.py), for the reference scripts."""
import enum
import sys
import types

import cv2
import numpy as np


class IType(enum.Enum):  # the members of SAIC-IS's isegm/data/interaction_type.py
    contour = "contour"
    point = "point"
    stroke = "stroke"


class Contour:  # SAIC-IS's isegm/data/contour.py, the parts its predictor uses
    def __init__(self, is_positive, coords=None):
        self.is_positive, self.coords = is_positive, list(coords or [])

    def __len__(self):
        return len(self.coords)

    @classmethod
    def get_mask(cls, contours, shape, filled, thickness=10):
        """(2, H, W) uint8: positive, negative; a filled polygon or an open polyline per entry of 3+ vertices,
        (row, col) vertices truncated to whole pixels."""
        layers = np.zeros((2,) + tuple(shape), np.uint8)
        for c in contours:
            if len(c) > 2:
                pts = np.array(c.coords)[:, ::-1].astype(np.int32)
                layer = np.zeros(shape, np.uint8)
                if filled:
                    cv2.fillPoly(layer, [pts], 1)
                else:
                    cv2.polylines(layer, [pts], False, 1, thickness)
                layers[0 if c.is_positive else 1] = np.maximum(layers[0 if c.is_positive else 1], layer)
        return layers


class Stroke(Contour):
    pass


def unused(*args, **kwargs):  # interaction generators: the evaluation's simulators, not used here
    return None


def _module(name, **members):
    m = types.ModuleType(name)
    m.__dict__.update(members)
    sys.modules[name] = m


def install() -> None:
    """Register the stand-in modules before anything of SAIC-IS's ``isegm`` is imported."""
    IType.__module__ = "isegm.data.interaction_type"
    _module("isegm.data")
    _module("isegm.data.interaction_type", IType=IType)
    _module("isegm.data.contour", Contour=Contour)
    _module("isegm.data.stroke", Stroke=Stroke)
    _module("isegm.data.interaction_generators", PointGenerator=unused, ContourGenerator=unused,
            StrokeGenerator=unused, AxisTransformType=None)
    _module("isegm.data.next_input_getters", get_contour_generation_params=None)
