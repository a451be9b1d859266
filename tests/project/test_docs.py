"""The README tells the truth about the commands and the config."""

import re

from pydantic import BaseModel

from infra.config import PROJECT_ROOT, StackConfig

README = (PROJECT_ROOT / "README.md").read_text()
MAKEFILE = (PROJECT_ROOT / "Makefile").read_text()


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = [model]
    for field in model.model_fields.values():
        for candidate in re.findall(r"infra\.config\.models\.(\w+)", str(field.annotation)):
            import infra.config.models

            nested = getattr(infra.config.models, candidate)
            if nested not in found:
                found += [m for m in _models(nested) if m not in found]
    return found


def test_every_make_target_the_readme_shows_exists() -> None:
    targets = set(re.findall(r"^([a-z]+):", MAKEFILE, re.MULTILINE))
    shown = set(re.findall(r"`(?:[A-Z_]+=\S+ )?make ([a-z]+)`", README))
    shown |= set(re.findall(r"^make ([a-z]+)", README, re.MULTILINE))
    assert shown, "the README shows no make command"
    assert shown <= targets


def test_config_reference_names_every_key() -> None:
    models = _models(StackConfig)
    assert len(models) >= 9
    for model in models:
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert re.search(rf"[`.]{key}[`.:\[ ]", README), key
