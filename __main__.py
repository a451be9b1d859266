"""The rayserve-gke Pulumi program: read config, wire the layers, export.

Config is validated in full before any resource is declared, so a bad value fails
`pulumi preview` with the key path named and nothing half-created.
"""

import pulumi
import yaml

from infra.config_sources import load_pulumi_config
from infra.serve_config import serve_config

stack = load_pulumi_config()

# Layers 1-10 of DESIGN.md are added here component by component; the Serve configs
# below are what every RayService will run.
serve_configs = {service.name: serve_config(stack, service) for service in stack.services}

pulumi.export("production", stack.production)
pulumi.export(
    "routes",
    {app.route_prefix: f"{service.name}/{app.name}" for service, app in stack.all_apps()},
)
pulumi.export(
    "serveConfigs",
    {name: yaml.safe_dump(config, sort_keys=False) for name, config in serve_configs.items()},
)
