from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Node(_message.Message):
    __slots__ = ("cores", "mem_mib", "socket")
    CORES_FIELD_NUMBER: _ClassVar[int]
    MEM_MIB_FIELD_NUMBER: _ClassVar[int]
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    cores: int
    mem_mib: int
    socket: int
    def __init__(self, cores: _Optional[int] = ..., mem_mib: _Optional[int] = ..., socket: _Optional[int] = ...) -> None: ...

class ExplicitTopology(_message.Message):
    __slots__ = ("name", "nodes", "distances")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    distances: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., distances: _Optional[_Iterable[int]] = ...) -> None: ...

class HostTopology(_message.Message):
    __slots__ = ("preset", "explicit")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    EXPLICIT_FIELD_NUMBER: _ClassVar[int]
    preset: str
    explicit: ExplicitTopology
    def __init__(self, preset: _Optional[str] = ..., explicit: _Optional[_Union[ExplicitTopology, _Mapping]] = ...) -> None: ...

class NodeUsage(_message.Message):
    __slots__ = ("used_vcpus", "used_mem_mib", "residents", "resident_vms", "free_mem_mib")
    USED_VCPUS_FIELD_NUMBER: _ClassVar[int]
    USED_MEM_MIB_FIELD_NUMBER: _ClassVar[int]
    RESIDENTS_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_VMS_FIELD_NUMBER: _ClassVar[int]
    FREE_MEM_MIB_FIELD_NUMBER: _ClassVar[int]
    used_vcpus: _containers.RepeatedScalarFieldContainer[int]
    used_mem_mib: _containers.RepeatedScalarFieldContainer[int]
    residents: _containers.RepeatedScalarFieldContainer[int]
    resident_vms: _containers.RepeatedCompositeFieldContainer[ResidentVM]
    free_mem_mib: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, used_vcpus: _Optional[_Iterable[int]] = ..., used_mem_mib: _Optional[_Iterable[int]] = ..., residents: _Optional[_Iterable[int]] = ..., resident_vms: _Optional[_Iterable[_Union[ResidentVM, _Mapping]]] = ..., free_mem_mib: _Optional[_Iterable[int]] = ...) -> None: ...

class ResidentVM(_message.Message):
    __slots__ = ("vcpus", "mem_mib", "age_s")
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEM_MIB_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    vcpus: _containers.RepeatedScalarFieldContainer[int]
    mem_mib: _containers.RepeatedScalarFieldContainer[int]
    age_s: float
    def __init__(self, vcpus: _Optional[_Iterable[int]] = ..., mem_mib: _Optional[_Iterable[int]] = ..., age_s: _Optional[float] = ...) -> None: ...

class VM(_message.Message):
    __slots__ = ("vcpus", "mem_mib", "alpha", "beta", "vnuma")
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEM_MIB_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    VNUMA_FIELD_NUMBER: _ClassVar[int]
    vcpus: int
    mem_mib: int
    alpha: float
    beta: float
    vnuma: int
    def __init__(self, vcpus: _Optional[int] = ..., mem_mib: _Optional[int] = ..., alpha: _Optional[float] = ..., beta: _Optional[float] = ..., vnuma: _Optional[int] = ...) -> None: ...

class PlaceRequest(_message.Message):
    __slots__ = ("topology", "usage", "vm", "request_id", "host_id", "vm_id", "cluster", "time_s", "fit_only")
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    FIT_ONLY_FIELD_NUMBER: _ClassVar[int]
    topology: HostTopology
    usage: NodeUsage
    vm: VM
    request_id: str
    host_id: str
    vm_id: str
    cluster: str
    time_s: float
    fit_only: bool
    def __init__(self, topology: _Optional[_Union[HostTopology, _Mapping]] = ..., usage: _Optional[_Union[NodeUsage, _Mapping]] = ..., vm: _Optional[_Union[VM, _Mapping]] = ..., request_id: _Optional[str] = ..., host_id: _Optional[str] = ..., vm_id: _Optional[str] = ..., cluster: _Optional[str] = ..., time_s: _Optional[float] = ..., fit_only: _Optional[bool] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("cpu_node", "vcpus", "mem_mib")
    CPU_NODE_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEM_MIB_FIELD_NUMBER: _ClassVar[int]
    cpu_node: int
    vcpus: int
    mem_mib: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, cpu_node: _Optional[int] = ..., vcpus: _Optional[int] = ..., mem_mib: _Optional[_Iterable[int]] = ...) -> None: ...

class ShieldOutcome(_message.Message):
    __slots__ = ("intervened", "fallback", "reason")
    INTERVENED_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    intervened: bool
    fallback: str
    reason: str
    def __init__(self, intervened: _Optional[bool] = ..., fallback: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GateOutcome(_message.Message):
    __slots__ = ("fired", "distance")
    FIRED_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    fired: bool
    distance: float
    def __init__(self, fired: _Optional[bool] = ..., distance: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("cor", "rmr", "defect")
    COR_FIELD_NUMBER: _ClassVar[int]
    RMR_FIELD_NUMBER: _ClassVar[int]
    DEFECT_FIELD_NUMBER: _ClassVar[int]
    cor: float
    rmr: float
    defect: float
    def __init__(self, cor: _Optional[float] = ..., rmr: _Optional[float] = ..., defect: _Optional[float] = ...) -> None: ...

class PlaceResponse(_message.Message):
    __slots__ = ("instances", "primitive", "policy", "shield", "gate", "predicted", "model_version", "request_id", "scores", "inputs_used", "fit")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    PRIMITIVE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SHIELD_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    INPUTS_USED_FIELD_NUMBER: _ClassVar[int]
    FIT_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    primitive: str
    policy: str
    shield: ShieldOutcome
    gate: GateOutcome
    predicted: Prediction
    model_version: str
    request_id: str
    scores: _containers.RepeatedScalarFieldContainer[float]
    inputs_used: _containers.RepeatedScalarFieldContainer[str]
    fit: FitVerdict
    def __init__(self, instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., primitive: _Optional[str] = ..., policy: _Optional[str] = ..., shield: _Optional[_Union[ShieldOutcome, _Mapping]] = ..., gate: _Optional[_Union[GateOutcome, _Mapping]] = ..., predicted: _Optional[_Union[Prediction, _Mapping]] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ..., scores: _Optional[_Iterable[float]] = ..., inputs_used: _Optional[_Iterable[str]] = ..., fit: _Optional[_Union[FitVerdict, _Mapping]] = ...) -> None: ...

class FitVerdict(_message.Message):
    __slots__ = ("fits", "needed_mem_mib", "free_mem_mib", "short")
    FITS_FIELD_NUMBER: _ClassVar[int]
    NEEDED_MEM_MIB_FIELD_NUMBER: _ClassVar[int]
    FREE_MEM_MIB_FIELD_NUMBER: _ClassVar[int]
    SHORT_FIELD_NUMBER: _ClassVar[int]
    fits: bool
    needed_mem_mib: int
    free_mem_mib: _containers.RepeatedScalarFieldContainer[int]
    short: str
    def __init__(self, fits: _Optional[bool] = ..., needed_mem_mib: _Optional[int] = ..., free_mem_mib: _Optional[_Iterable[int]] = ..., short: _Optional[str] = ...) -> None: ...

class PlaceBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PlaceRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[PlaceRequest, _Mapping]]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PlaceResult(_message.Message):
    __slots__ = ("placement", "error")
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    placement: PlaceResponse
    error: ItemError
    def __init__(self, placement: _Optional[_Union[PlaceResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class PlaceBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PlaceResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PlaceResult, _Mapping]]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShieldConfig(_message.Message):
    __slots__ = ("depth", "width", "threshold", "window", "max_types")
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_TYPES_FIELD_NUMBER: _ClassVar[int]
    depth: int
    width: float
    threshold: float
    window: int
    max_types: int
    def __init__(self, depth: _Optional[int] = ..., width: _Optional[float] = ..., threshold: _Optional[float] = ..., window: _Optional[int] = ..., max_types: _Optional[int] = ...) -> None: ...

class Preset(_message.Message):
    __slots__ = ("name", "topology")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    name: str
    topology: ExplicitTopology
    def __init__(self, name: _Optional[str] = ..., topology: _Optional[_Union[ExplicitTopology, _Mapping]] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("model_version", "policy", "policy_name", "shield", "gate_enabled", "primitives", "presets", "max_nodes", "max_batch", "model_loaded_unix_s", "model_source", "catur_version", "collecting")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    SHIELD_FIELD_NUMBER: _ClassVar[int]
    GATE_ENABLED_FIELD_NUMBER: _ClassVar[int]
    PRIMITIVES_FIELD_NUMBER: _ClassVar[int]
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    MAX_NODES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MODEL_LOADED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CATUR_VERSION_FIELD_NUMBER: _ClassVar[int]
    COLLECTING_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    policy: str
    policy_name: str
    shield: ShieldConfig
    gate_enabled: bool
    primitives: _containers.RepeatedScalarFieldContainer[str]
    presets: _containers.RepeatedCompositeFieldContainer[Preset]
    max_nodes: int
    max_batch: int
    model_loaded_unix_s: float
    model_source: str
    catur_version: str
    collecting: bool
    def __init__(self, model_version: _Optional[str] = ..., policy: _Optional[str] = ..., policy_name: _Optional[str] = ..., shield: _Optional[_Union[ShieldConfig, _Mapping]] = ..., gate_enabled: _Optional[bool] = ..., primitives: _Optional[_Iterable[str]] = ..., presets: _Optional[_Iterable[_Union[Preset, _Mapping]]] = ..., max_nodes: _Optional[int] = ..., max_batch: _Optional[int] = ..., model_loaded_unix_s: _Optional[float] = ..., model_source: _Optional[str] = ..., catur_version: _Optional[str] = ..., collecting: _Optional[bool] = ...) -> None: ...

class DepartRequest(_message.Message):
    __slots__ = ("host_id", "vm_id", "time_s")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    vm_id: str
    time_s: float
    def __init__(self, host_id: _Optional[str] = ..., vm_id: _Optional[str] = ..., time_s: _Optional[float] = ...) -> None: ...

class DepartResponse(_message.Message):
    __slots__ = ("recorded",)
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    recorded: bool
    def __init__(self, recorded: _Optional[bool] = ...) -> None: ...
