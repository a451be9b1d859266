"""The program itself, run offline: under Pulumi mocks (runner), as a tree, rendered."""
