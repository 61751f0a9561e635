"""digest: build a publication's weekly newsletter and send it exactly once."""

__version__ = "0.1.0"
