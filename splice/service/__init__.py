"""The service: deployed instances, accepted triggers, workers, the scheduler and their backends.

The same modules serve the embedded default (one `splice serve` process on SQLite) and the
scaled-out mode (separate roles on PostgreSQL, Redis and an S3-compatible store).
"""
