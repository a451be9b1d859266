"""Layer 9, the RayServices: `serve_config` (the serveConfigV2 `make run` serves too),
`manifest` (the RayService custom resource, pure), `component` (the Pulumi component
with its Secrets) and `upgrades` (the guard that tells before KubeRay replaces a cluster)."""
