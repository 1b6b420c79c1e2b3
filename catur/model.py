"""Old name of :mod:`catur.policy_model` (a trained placement policy on disk, or a rule
version); kept as an alias for one release (see docs/explanation/architecture.md). Import from
:mod:`catur.policy_model`."""

from catur.policy_model import (
    ACTIVATIONS,
    DEFAULT_MODEL,
    MODEL_FORMAT,
    RULE_FORMAT,
    RULE_KIND,
    RULE_POLICIES,
    MANIFEST_KEYS,
    PolicyModel,
    RulePolicy,
    check_manifest,
    default_model_dir,
    file_sha256,
    is_rule,
    load_policy,
    read_manifest,
    rule_manifest,
    weights_sha256,
)

__all__ = ["ACTIVATIONS", "DEFAULT_MODEL", "MANIFEST_KEYS", "MODEL_FORMAT", "RULE_FORMAT", "RULE_KIND", "RULE_POLICIES", "PolicyModel",
           "RulePolicy", "check_manifest", "default_model_dir", "file_sha256", "is_rule", "load_policy", "read_manifest", "rule_manifest", "weights_sha256"]
