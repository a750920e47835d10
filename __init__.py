"""Wan VAE decode and video export for ComfyUI. ComfyUI imports this file; everything here is relative."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"  # the one registration of the front-end extension (pyproject.toml names no web folder)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
