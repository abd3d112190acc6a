"""The HTTP API and webhook receiver (FastAPI); `create_app` builds it on a service runtime."""

from splice.api.app import create_app

__all__ = ["create_app"]
