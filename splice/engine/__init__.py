"""The engine: runs a flow's steps in order and reports every step run."""
