"""Pieces every Serve app shares: request parsing and batching knobs."""
