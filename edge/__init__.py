"""weed-detector edge runtime: camera -> classify -> decide -> actuate, failing safe.

Importing this package loads only the standard library; numpy, OpenCV, LiteRT and the
hardware libraries are imported by the modules that need them.
"""

__version__ = "0.1.0"
