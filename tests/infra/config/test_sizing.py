"""The machine catalog and GKE's allocatable formula the sizing checks rest on."""

from __future__ import annotations

import pytest

from infra.config import gpu_catalog, machines
from infra.config.sizing import sizing_issues
from infra.config.sources import load_stack_file
from tests.infra.helpers import STACKS


def _without_daemonsets_cpu(machine_type: str) -> float:
    shape = machines.shape(machine_type)
    assert shape is not None
    return machines.allocatable_cpu(shape) + machines.DAEMONSET_CPU


def _without_daemonsets_memory_gib(machine_type: str) -> float:
    shape = machines.shape(machine_type)
    assert shape is not None
    return (machines.allocatable_memory(shape) + machines.DAEMONSET_MEMORY) / machines.GIB


@pytest.mark.parametrize(
    ("machine_type", "cpu", "memory_gib"),
    [
        # GKE's published examples (plan-node-sizes): reserved CPU 6% of the first core,
        # 1% of the second, 0.5% of the next two, 0.25% above; memory 25/20/10/6/2% tiers,
        # then the 100 MiB eviction threshold.
        ("n1-standard-1", 0.94, 3.75 - 0.9375 - 100 / 1024),
        ("e2-standard-4", 4 - 0.06 - 0.01 - 0.01, 16 - 1 - 0.8 - 0.8 - 100 / 1024),
        ("e2-standard-8", 8 - 0.08 - 0.01, 32 - 1 - 0.8 - 0.8 - 0.96 - 100 / 1024),
        ("a3-highgpu-8g", 208 - 0.08 - 204 * 0.0025, 1872 - 1 - 0.8 - 0.8 - 6.72 - 1744 * 0.02
         - 100 / 1024),
    ],
)  # fmt: skip
def test_allocatable_follows_gkes_formula(machine_type: str, cpu: float, memory_gib: float) -> None:
    assert _without_daemonsets_cpu(machine_type) == pytest.approx(cpu)
    assert _without_daemonsets_memory_gib(machine_type) == pytest.approx(memory_gib)


def test_every_gpu_machine_type_has_a_shape() -> None:
    """The GPU catalog and the machine catalog agree: no GPU machine the sizing check
    cannot size."""
    bundled = {m for gpu in gpu_catalog.GPU_TYPES.values() for m in gpu.bundled}
    assert bundled <= set(machines.MACHINE_SHAPES)
    for name, shape in machines.MACHINE_SHAPES.items():
        assert gpu_catalog.machine_family(name) == name.split("-")[0]
        assert shape.vcpus > 0 and shape.memory_gib >= shape.vcpus * 0.9


@pytest.mark.parametrize("stack", STACKS)
def test_the_stacks_fit_their_machines(stack: str) -> None:
    assert sizing_issues(load_stack_file(stack)) == []


def test_near_machine_types_are_the_same_family_and_kind() -> None:
    assert machines.near_machine_types("e2-standard-7") == [
        "e2-standard-2", "e2-standard-4", "e2-standard-8", "e2-standard-16", "e2-standard-32"
    ]  # fmt: skip
    assert all(m.startswith("n2-") for m in machines.near_machine_types("n2-ultramem-8"))
