"""Sentence embeddings with all-MiniLM-L6-v2 (384-d, L2-normalised), batched."""
