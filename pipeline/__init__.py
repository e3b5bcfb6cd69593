"""Neural style transfer (Gatys et al.) for images, photo archives and videos."""

__version__ = "0.1.0"
