"""The typed stack config: one model for `pulumi up` and for `make run`.

Keys are camelCase in `Pulumi.<stack>.yaml` (Pulumi's convention) and snake_case here.
Parsing happens in two passes, both before any resource exists:
1. pydantic checks shapes, types, ranges and allowed values of every key, each in its
   field type (`fields`) and model (`models`);
2. `checks` checks what spans keys (duplicates, references between keys, machine/GPU
   pairings from `gpu_catalog`, production rules).
Both report `ConfigIssue`s (`errors`) whose `path` is the key path a user would pass to
`pulumi config set --path`, e.g. `services[0].apps[1].routePrefix`. `sources` reads the
values from the Pulumi engine or from the stack file.
"""

from infra.config.checks import stack_issues
from infra.config.errors import ConfigError, ConfigIssue
from infra.config.fields import GPU_TYPE_NAMES, normalize_route_prefix, quantity_value
from infra.config.models import (
    JSON_KEYS,
    STRUCTURED_KEYS,
    SYSTEM_POOL,
    App,
    Autoscaling,
    Deployment,
    Head,
    NodePool,
    RayActorOptions,
    ServeIngress,
    Service,
    StackConfig,
    UpgradeStrategy,
    WorkerGroup,
)
from infra.config.parse import parse_stack_config
from infra.constants import PROJECT, PROJECT_ROOT

__all__ = [
    "GPU_TYPE_NAMES",
    "JSON_KEYS",
    "PROJECT",
    "PROJECT_ROOT",
    "STRUCTURED_KEYS",
    "SYSTEM_POOL",
    "App",
    "Autoscaling",
    "ConfigError",
    "ConfigIssue",
    "Deployment",
    "Head",
    "NodePool",
    "RayActorOptions",
    "ServeIngress",
    "Service",
    "StackConfig",
    "UpgradeStrategy",
    "WorkerGroup",
    "normalize_route_prefix",
    "parse_stack_config",
    "quantity_value",
    "stack_issues",
]
