"""API-key auth in Ray Serve's HTTP proxy (not an app: it guards every app's route)."""
