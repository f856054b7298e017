"""The annotation studio: Gradio Blocks page (``ui.app``) over plain actions (``ui.studio``)."""
from .app import HEAD, build_app
from .studio import Studio, View, model_loader

__all__ = ["HEAD", "Studio", "View", "build_app", "model_loader"]
