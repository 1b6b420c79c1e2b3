"""Old name of :mod:`catur.service.serving` (the policy a running service serves, hot
reload, the registry watch); kept as an alias for one release (see docs/explanation/architecture.md)."""

from catur.service.serving import (
    AUTO_MODEL,
    NO_MODEL,
    REGISTRY_POINTER,
    ModelHolder,
    ServingModel,
    build_decider,
    fingerprint,
    resolve_model_dir,
)

__all__ = ["AUTO_MODEL", "NO_MODEL", "REGISTRY_POINTER", "ModelHolder", "ServingModel", "build_decider", "fingerprint", "resolve_model_dir"]
