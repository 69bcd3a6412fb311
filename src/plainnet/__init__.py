"""plainnet: pod networking for Kubernetes with the simplest mechanism that works."""

__version__ = "0.1.0"
