"""safeship: change a live Python service without risk."""

from safeship._version import __version__

__all__ = ["__version__"]
