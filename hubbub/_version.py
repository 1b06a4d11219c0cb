"""The version, in a module of its own so that code imported by ``hubbub/__init__.py`` (the
worker registry) can read it without a cycle."""

__version__ = "0.1.0"
