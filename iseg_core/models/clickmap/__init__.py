"""Click-map models of the RITM lineage: clicks drawn as maps and fed to the network with the image and the
previous mask (see :mod:`.model`)."""
from .model import CLICKMAP_CONFIGS, ClickMapConfig, ClickMapNetwork, ClickMapSegmenter, build_clickmap
from .zoom import RitmSession, RitmZoomIn, SaicSession, SaicZoomIn

__all__ = ["CLICKMAP_CONFIGS", "ClickMapConfig", "ClickMapNetwork", "ClickMapSegmenter", "RitmSession", "RitmZoomIn",
           "SaicSession", "SaicZoomIn", "build_clickmap"]
