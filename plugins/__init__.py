"""Built-in wavelens plugins.

Each module here is listed in the top-level ``registry.yaml`` and uses only the
public API of :mod:`framework`, exactly as a third-party plugin would.
"""
