"""The ``splice`` command line."""
