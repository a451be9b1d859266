"""The Pulumi program's building blocks: typed config, pure builders, components."""
