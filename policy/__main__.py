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
)
from rules import RULES, Rule


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


PolicyPack(name="rayserve-gke", policies=[_policy(rule) for rule in RULES])
