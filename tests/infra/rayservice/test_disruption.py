"""Ray pods' PriorityClasses and PodDisruptionBudgets: valid objects that select exactly
the pods the RayService creates, and heads above workers."""

from __future__ import annotations

import pytest

from infra.config.sources import load_stack_file
from infra.program.render import objects_of
from infra.program.runner import shared_run
from infra.rayservice.disruption import disruption_budgets, priority_class_name, priority_classes
from tests.infra.helpers import STACKS
from tests.k8s_schemas import validation_errors


@pytest.mark.parametrize("stack", STACKS)
def test_budgets_select_the_ray_pods_of_their_service(stack: str) -> None:
    objects = objects_of(shared_run(stack))
    budgets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PodDisruptionBudget"}
    rayservices = [o for o in objects if o["kind"] == "RayService"]
    assert rayservices
    for rayservice in rayservices:
        service = rayservice["metadata"]["name"]
        cluster = rayservice["spec"]["rayClusterConfig"]
        head_labels = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
        head = budgets[f"{service}-ray-head"]
        assert head["spec"]["maxUnavailable"] == 0  # never evicted voluntarily
        assert head["spec"]["selector"]["matchLabels"].items() <= head_labels.items()
        worker = budgets[f"{service}-ray-worker"]
        assert worker["spec"]["maxUnavailable"] == 1
        for group in cluster["workerGroupSpecs"]:
            labels = group["template"]["metadata"]["labels"]
            assert worker["spec"]["selector"]["matchLabels"].items() <= labels.items()
            # ...and the head budget never matches a worker, nor the worker one a head.
            assert not head["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert not worker["spec"]["selector"]["matchLabels"].items() <= head_labels.items()


@pytest.mark.parametrize("stack", STACKS)
def test_objects_are_valid_and_heads_outrank_workers(stack: str) -> None:
    config = load_stack_file(stack)
    classes = priority_classes(config.namespace)
    objects = [*classes, *(b for s in config.services for b in disruption_budgets(s, "ray"))]
    for obj in objects:
        assert validation_errors(obj) == [], obj["metadata"]["name"]
    head, worker = classes
    assert head["value"] > worker["value"] > 0
    assert not head["globalDefault"] and not worker["globalDefault"]


@pytest.mark.parametrize("stack", STACKS)
def test_ray_pods_carry_the_priority_classes_the_program_creates(stack: str) -> None:
    objects = objects_of(shared_run(stack))
    created = {o["metadata"]["name"] for o in objects if o["kind"] == "PriorityClass"}
    namespace = load_stack_file(stack).namespace
    for rayservice in [o for o in objects if o["kind"] == "RayService"]:
        cluster = rayservice["spec"]["rayClusterConfig"]
        head = cluster["headGroupSpec"]["template"]["spec"]["priorityClassName"]
        assert head == priority_class_name(namespace, "head") and head in created
        for group in cluster["workerGroupSpecs"]:
            worker = group["template"]["spec"]["priorityClassName"]
            assert worker == priority_class_name(namespace, "worker") and worker in created
