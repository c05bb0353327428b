"""Capture: image sources, part framing, image files and good-only image sets."""
