"""Packaged data sets (read with ``importlib.resources.files("bioflux.data")``)."""
