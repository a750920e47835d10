"""Errors the library raises for bad input. Each message says what was found, what was expected and what to do."""


class WanVAEError(Exception):
    """Base class: an error caused by the user's input or settings (the command line exits with code 2)."""


class CheckpointError(WanVAEError, ValueError):
    """A file or state dict that cannot be loaded as a Wan VAE."""


class LatentError(WanVAEError, ValueError):
    """Latents (or a video to encode) that do not fit the VAE."""


class SettingsError(WanVAEError, ValueError):
    """Decode options (tiling, chunking, precision) that cannot work."""


class DecodeCancelled(WanVAEError):
    """The caller's `cancel()` returned True; the decode stopped between two chunks."""


class VideoWriteError(WanVAEError):
    """The video could not be written; no partial file is left behind."""


class VideoReadError(WanVAEError):
    """A video (or its audio) could not be read: missing, not a video, or not decodable."""
