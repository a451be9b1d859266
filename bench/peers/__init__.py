"""The peers: what a user would otherwise run (Serve defaults, FastAPI, BentoML)."""
