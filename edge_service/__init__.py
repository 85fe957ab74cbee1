"""edge_service: one deployable unit (app, settings, Dockerfile).

It lands with the data-path and controller issues.
"""
