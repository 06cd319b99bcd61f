from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    FLOAT32: _ClassVar[DType]
    FLOAT16: _ClassVar[DType]
    BFLOAT16: _ClassVar[DType]
    FLOAT64: _ClassVar[DType]
    INT64: _ClassVar[DType]
    INT32: _ClassVar[DType]
    INT8: _ClassVar[DType]
    UINT8: _ClassVar[DType]
    BOOL: _ClassVar[DType]

class Granularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANULARITY_UNSPECIFIED: _ClassVar[Granularity]
    LAYER: _ClassVar[Granularity]
    BLOCK: _ClassVar[Granularity]
DTYPE_UNSPECIFIED: DType
FLOAT32: DType
FLOAT16: DType
BFLOAT16: DType
FLOAT64: DType
INT64: DType
INT32: DType
INT8: DType
UINT8: DType
BOOL: DType
GRANULARITY_UNSPECIFIED: Granularity
LAYER: Granularity
BLOCK: Granularity

class InferOpen(_message.Message):
    __slots__ = ("request_id", "model", "fingerprint", "client_set", "cut", "granularity", "wire_dtype", "graph_hash", "preprocess")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SET_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    WIRE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    GRAPH_HASH_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    fingerprint: str
    client_set: _containers.RepeatedScalarFieldContainer[str]
    cut: _containers.RepeatedScalarFieldContainer[str]
    granularity: Granularity
    wire_dtype: DType
    graph_hash: str
    preprocess: str
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., fingerprint: _Optional[str] = ..., client_set: _Optional[_Iterable[str]] = ..., cut: _Optional[_Iterable[str]] = ..., granularity: _Optional[_Union[Granularity, str]] = ..., wire_dtype: _Optional[_Union[DType, str]] = ..., graph_hash: _Optional[str] = ..., preprocess: _Optional[str] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("name", "dtype", "shape", "total_bytes", "index", "offset", "data", "codec", "decoded_bytes", "scale", "zero_point", "quant_axis")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    DECODED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    QUANT_AXIS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    total_bytes: int
    index: int
    offset: int
    data: bytes
    codec: str
    decoded_bytes: int
    scale: _containers.RepeatedScalarFieldContainer[float]
    zero_point: _containers.RepeatedScalarFieldContainer[int]
    quant_axis: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., total_bytes: _Optional[int] = ..., index: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., codec: _Optional[str] = ..., decoded_bytes: _Optional[int] = ..., scale: _Optional[_Iterable[float]] = ..., zero_point: _Optional[_Iterable[int]] = ..., quant_axis: _Optional[int] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("open", "chunk")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    open: InferOpen
    chunk: TensorChunk
    def __init__(self, open: _Optional[_Union[InferOpen, _Mapping]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TensorArrival(_message.Message):
    __slots__ = ("name", "bytes", "chunks", "first_byte_s", "last_byte_s", "compute_start_s", "compute_s", "queue_s", "vertices_run", "codec", "decoded_bytes", "decode_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    FIRST_BYTE_S_FIELD_NUMBER: _ClassVar[int]
    LAST_BYTE_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_START_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    VERTICES_RUN_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    DECODED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DECODE_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    bytes: int
    chunks: int
    first_byte_s: float
    last_byte_s: float
    compute_start_s: float
    compute_s: float
    queue_s: float
    vertices_run: int
    codec: str
    decoded_bytes: int
    decode_s: float
    def __init__(self, name: _Optional[str] = ..., bytes: _Optional[int] = ..., chunks: _Optional[int] = ..., first_byte_s: _Optional[float] = ..., last_byte_s: _Optional[float] = ..., compute_start_s: _Optional[float] = ..., compute_s: _Optional[float] = ..., queue_s: _Optional[float] = ..., vertices_run: _Optional[int] = ..., codec: _Optional[str] = ..., decoded_bytes: _Optional[int] = ..., decode_s: _Optional[float] = ...) -> None: ...

class ServerTimings(_message.Message):
    __slots__ = ("open_unix_s", "first_byte_s", "last_byte_s", "queue_s", "compute_s", "overlap_s", "reply_s", "setup_s", "bytes_in", "tensors", "decode_s", "batch_size", "batch_wait_s")
    OPEN_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    FIRST_BYTE_S_FIELD_NUMBER: _ClassVar[int]
    LAST_BYTE_S_FIELD_NUMBER: _ClassVar[int]
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_S_FIELD_NUMBER: _ClassVar[int]
    REPLY_S_FIELD_NUMBER: _ClassVar[int]
    SETUP_S_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    DECODE_S_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    open_unix_s: float
    first_byte_s: float
    last_byte_s: float
    queue_s: float
    compute_s: float
    overlap_s: float
    reply_s: float
    setup_s: float
    bytes_in: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorArrival]
    decode_s: float
    batch_size: int
    batch_wait_s: float
    def __init__(self, open_unix_s: _Optional[float] = ..., first_byte_s: _Optional[float] = ..., last_byte_s: _Optional[float] = ..., queue_s: _Optional[float] = ..., compute_s: _Optional[float] = ..., overlap_s: _Optional[float] = ..., reply_s: _Optional[float] = ..., setup_s: _Optional[float] = ..., bytes_in: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorArrival, _Mapping]]] = ..., decode_s: _Optional[float] = ..., batch_size: _Optional[int] = ..., batch_wait_s: _Optional[float] = ...) -> None: ...

class ServerLoad(_message.Message):
    __slots__ = ("queue_s", "compute_s", "calls", "window_s", "inflight", "queued")
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    queue_s: float
    compute_s: float
    calls: int
    window_s: float
    inflight: int
    queued: int
    def __init__(self, queue_s: _Optional[float] = ..., compute_s: _Optional[float] = ..., calls: _Optional[int] = ..., window_s: _Optional[float] = ..., inflight: _Optional[int] = ..., queued: _Optional[int] = ...) -> None: ...

class InferReply(_message.Message):
    __slots__ = ("request_id", "output", "timings", "device", "cut", "load")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    output: Tensor
    timings: ServerTimings
    device: str
    cut: _containers.RepeatedScalarFieldContainer[str]
    load: ServerLoad
    def __init__(self, request_id: _Optional[str] = ..., output: _Optional[_Union[Tensor, _Mapping]] = ..., timings: _Optional[_Union[ServerTimings, _Mapping]] = ..., device: _Optional[str] = ..., cut: _Optional[_Iterable[str]] = ..., load: _Optional[_Union[ServerLoad, _Mapping]] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("probe_id", "payload")
    PROBE_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    probe_id: str
    payload: bytes
    def __init__(self, probe_id: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ProbeReply(_message.Message):
    __slots__ = ("probe_id", "bytes_received", "messages", "first_unix_s", "last_unix_s", "receive_s")
    PROBE_ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FIRST_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    LAST_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_S_FIELD_NUMBER: _ClassVar[int]
    probe_id: str
    bytes_received: int
    messages: int
    first_unix_s: float
    last_unix_s: float
    receive_s: float
    def __init__(self, probe_id: _Optional[str] = ..., bytes_received: _Optional[int] = ..., messages: _Optional[int] = ..., first_unix_s: _Optional[float] = ..., last_unix_s: _Optional[float] = ..., receive_s: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "fingerprint", "device", "input_shape", "input_dtype", "server_time_s", "profile_granularity", "description", "graph_hash", "load", "max_batch", "batch_refusal")
    class ServerTimeSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_S_FIELD_NUMBER: _ClassVar[int]
    PROFILE_GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    GRAPH_HASH_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_REFUSAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    fingerprint: str
    device: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    input_dtype: DType
    server_time_s: _containers.ScalarMap[str, float]
    profile_granularity: Granularity
    description: str
    graph_hash: str
    load: ServerLoad
    max_batch: int
    batch_refusal: str
    def __init__(self, name: _Optional[str] = ..., fingerprint: _Optional[str] = ..., device: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., input_dtype: _Optional[_Union[DType, str]] = ..., server_time_s: _Optional[_Mapping[str, float]] = ..., profile_granularity: _Optional[_Union[Granularity, str]] = ..., description: _Optional[str] = ..., graph_hash: _Optional[str] = ..., load: _Optional[_Union[ServerLoad, _Mapping]] = ..., max_batch: _Optional[int] = ..., batch_refusal: _Optional[str] = ...) -> None: ...

class ListModelsReply(_message.Message):
    __slots__ = ("models", "max_message_bytes", "max_inflight")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    max_message_bytes: int
    max_inflight: int
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., max_message_bytes: _Optional[int] = ..., max_inflight: _Optional[int] = ...) -> None: ...
