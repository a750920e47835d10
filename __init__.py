"""Wan VAE decode and video export for ComfyUI. ComfyUI imports this file; everything here is relative."""

WEB_DIRECTORY = "./web"  # the one registration of the front-end extension (pyproject.toml names no web folder)

# ComfyUI loads this file as a package named after the folder. pytest imports the repository root's
# __init__.py too, as a bare module when the folder's name is not an identifier (a clone in
# `ComfyUI-WanVAE`); without a package its relative imports cannot work, and the nodes are not wanted.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
