"""The SAM family's official networks, for the equality tests and the publishers' side of the benchmark
(test-reference code): SAM 2.1 from PyPI ``sam2`` (its packaged configs), HQ-SAM from PyPI
``segment-anything-hq``, MobileSAM from its code in the shared reference folder (``official``: the folder that
holds ``mobile_sam/``, i.e. ../shared/reference/official)."""
import importlib
import sys

SAM2_CONFIG_FILES = {"sam2.1_hiera_tiny": "t", "sam2.1_hiera_small": "s", "sam2.1_hiera_base_plus": "b+",
                     "sam2.1_hiera_large": "l"}


def build_official(name: str, official: str):
    """``(network, predictor class, wrap)`` for iseg model ``name``; ``wrap(state_dict)`` is the object its
    publishers save in a file (SAM 2: ``{"model": ...}``; the others: the state dict itself). Weights are
    random (seed torch first)."""
    if name in SAM2_CONFIG_FILES:
        build = importlib.import_module("sam2.build_sam")
        predictor = importlib.import_module("sam2.sam2_image_predictor").SAM2ImagePredictor
        net = build.build_sam2(f"configs/sam2.1/sam2.1_hiera_{SAM2_CONFIG_FILES[name]}.yaml", ckpt_path=None,
                               device="cpu")
        return net.eval(), predictor, lambda state: {"model": state}
    if name.startswith("sam_hq_"):
        package = importlib.import_module("segment_anything_hq")
        net = package.sam_model_registry[name[len("sam_hq_"):]](checkpoint=None)
        return net.eval(), package.SamPredictor, lambda state: state
    if name == "mobile_sam":
        sys.path.insert(0, f"{official}/mobile_sam")
        try:
            package = importlib.import_module("mobile_sam")
        finally:
            sys.path.pop(0)
        return package.sam_model_registry["vit_t"](checkpoint=None).eval(), package.SamPredictor, lambda state: state
    raise ValueError(f"no official reference for {name}")
