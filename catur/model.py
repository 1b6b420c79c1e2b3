"""Old name of :mod:`catur.policy_model` (a trained placement policy on disk); kept as an
alias for one release (see README, "What is where"). Import from :mod:`catur.policy_model`."""

from catur.policy_model import (
    ACTIVATIONS,
    DEFAULT_MODEL,
    MODEL_FORMAT,
    PolicyModel,
    check_manifest,
    default_model_dir,
)

__all__ = ["ACTIVATIONS", "DEFAULT_MODEL", "MODEL_FORMAT", "PolicyModel", "check_manifest", "default_model_dir"]
