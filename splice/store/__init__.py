"""Records of executions, step runs and logs, in SQLite (embedded) or PostgreSQL."""

from splice.store.records import ExecutionRecord, RecordStore, StepRunRecord

__all__ = ["ExecutionRecord", "RecordStore", "StepRunRecord"]
