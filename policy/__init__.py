"""rayserve-gke's Pulumi policy pack; the rules themselves are plain functions in rules.py."""
