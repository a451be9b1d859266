"""`make run`: a stack's Serve apps on a local Ray cluster, wired as on GKE."""
