"""Generated gRPC stubs of the ``catur.v1`` contract (``proto/catur/v1/placement.proto``).

Do not edit the ``placement_pb2*`` files: regenerate them with
``python -m catur.service.protogen``. A test fails when they are stale.
"""
