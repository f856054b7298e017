"""Errors raised by iseg_core. Each carries a message meant to be shown to a person as is."""


class IsegError(Exception):
    """Base class of every error iseg_core raises on purpose."""


class ImageError(IsegError, ValueError):
    """The image cannot be segmented as given (wrong type, shape, size, or undecodable file)."""


class PromptError(IsegError, ValueError):
    """A prompt is malformed or lies outside the image."""


class CheckpointError(IsegError, ValueError):
    """A checkpoint file cannot be read or does not fit the model architecture."""


class UnknownModelError(IsegError, KeyError):
    """A model or checkpoint name is not in the registry."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(IsegError, RuntimeError):
    """Known weights could not be found locally nor downloaded (offline, no network, bad hash)."""
