"""What an app accepts from stack config: its builder's `args` model, its deployments'
names and each one's `user_config` model.

Every app package declares one in `<package>/config.py` as `APP_CONFIG`; that module
imports pydantic and nothing heavier, so `pulumi preview` validates `args` and
`userConfig` without the model libraries (infra/config/apps.py).
"""

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class AppConfig:
    args: type[BaseModel]
    """The builder's one parameter: `build_app(args: <this>)`."""
    deployments: Mapping[str, type[BaseModel] | None]
    """Deployment name -> its `user_config` model (None: it takes no user_config)."""


CONFIG_MODULE = "config"
CONFIG_ATTRIBUTE = "APP_CONFIG"
