"""NEUKONFIG: what crosses service boundaries (errors, manifest schema, wire format) and the CLI."""

__version__ = "0.1.0"
