"""The policy pack.

`pulumi preview --policy-pack policy` (prod: add `--policy-pack-config policy/prod.json`).
"""

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from rules import RULES, STACK_RULES, Rule, StackRule


def _policy(rule: Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        config = args.get_config() if rule.name == "gcs-fault-tolerance" else {}
        for message in rule.check(args.resource_type, args.props, config or {}):
            report_violation(message, None)

    schema = (
        PolicyConfigSchema(properties={"requireGcsFaultTolerance": {"type": "boolean"}})
        if rule.name == "gcs-fault-tolerance"
        else None
    )
    return ResourceValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=schema,
    )


def _stack_policy(rule: StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [(r.resource_type, r.props) for r in args.resources]
        for message in rule.check(resources, args.get_config() or {}):
            report_violation(message, None)

    return StackValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(properties={rule.config_key: {"type": "boolean"}}),
    )


PolicyPack(
    name="rayserve-gke",
    policies=[*(_policy(rule) for rule in RULES), *(_stack_policy(r) for r in STACK_RULES)],
)
