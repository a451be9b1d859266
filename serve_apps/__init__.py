"""Serve apps: one package per app, each with a typed builder as its import path.

Package `__init__` modules stay empty so the Pulumi program can check a builder's
import path without importing model libraries.
"""
