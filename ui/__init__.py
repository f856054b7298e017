"""The annotation studio: Gradio Blocks page (``ui.app``) over plain actions (``ui.studio``)."""
from .app import HEAD, build_app, launch_options
from .studio import Studio, View, model_loader

__all__ = ["HEAD", "Studio", "View", "build_app", "launch_options", "model_loader"]
