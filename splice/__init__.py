"""Splice: a self-hostable integration platform that runs every execution in a sandbox."""

__version__ = "0.1.0"
