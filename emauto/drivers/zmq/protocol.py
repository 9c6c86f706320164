"""The emauto wire protocol (version 1): a strict JSON header plus raw binary array frames.

A message is a ZeroMQ multipart message ``[header, array_0, array_1, ...]``. The header is
UTF-8 JSON validated by a pydantic model (unknown fields, NaN and inf rejected); each array
frame is the raw little-endian C-order bytes of an array whose dtype and shape the header
states, checked against the frame's length. Nothing is ever pickled. See docs/protocol.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from emauto.errors import ProtocolError
from emauto.microscope import (
    AcquisitionRequest,
    Frame,
    ImageRequest,
    PositionsScan,
    RonchigramRequest,
)
from emauto.units import STRICT, StrictModel

PROTOCOL_VERSION = 1

ModelT = TypeVar("ModelT", bound=BaseModel)

#: Largest header, bytes.
MAX_HEADER_BYTES = 256 * 1024
#: Largest array frame in a request (positions), bytes.
MAX_REQUEST_FRAME_BYTES = 64 * 1024 * 1024
#: Largest array frame in a reply (images, Ronchigrams), bytes.
MAX_REPLY_FRAME_BYTES = 512 * 1024 * 1024
#: Most frames in one message (header + arrays).
MAX_FRAMES = 4
#: Deepest nesting of JSON arrays/objects in a header.
MAX_JSON_DEPTH = 32
#: Most digits of a JSON integer in a header (seq needs 19).
MAX_INT_DIGITS = 32
#: Most bytes of one request message, all frames together (header + positions).
MAX_REQUEST_BYTES = MAX_HEADER_BYTES + MAX_REQUEST_FRAME_BYTES
#: Array element types allowed on the wire.
DTYPES = ("float32", "float64", "uint8", "uint16", "uint32", "int32")

#: ``twin_truth`` answers only on a twin (the hello reply says so): ground truth for rewards
#: and reports, never available from real hardware.
AGENT_OPS = (
    "hello",
    "describe",
    "read",
    "set",
    "acquire",
    "safe",
    "heartbeat",
    "status",
    "twin_truth",
    "applied",
)
OPERATOR_OPS = ("reset_watchdog", "set_limits")
OPS = AGENT_OPS + OPERATOR_OPS

#: The wire schema: `emauto.units.STRICT` plus ``strict=True`` (no type coercion on the wire).
_WIRE = ConfigDict(**STRICT, strict=True)

ClientId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class ArrayMeta(StrictModel):
    """Describes one binary frame: the field it fills, element type and shape."""

    model_config = _WIRE
    field: Literal["data", "positions_m"]
    dtype: Literal["float32", "float64", "uint8", "uint16", "uint32", "int32"]
    shape: list[Annotated[int, Field(ge=0, le=1 << 20)]] = Field(max_length=4)

    def nbytes(self) -> int:
        """Expected frame length, bytes."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


class Request(StrictModel):
    """Header of a request. ``deadline_s`` is the client's time budget for this request."""

    model_config = _WIRE
    v: int
    client: ClientId
    seq: int = Field(ge=0, lt=1 << 62)
    deadline_s: float = Field(gt=0, le=3600)
    op: Literal[
        "hello",
        "describe",
        "read",
        "set",
        "acquire",
        "safe",
        "heartbeat",
        "status",
        "twin_truth",
        "applied",
        "reset_watchdog",
        "set_limits",
    ]
    args: dict[str, Any] = Field(default_factory=dict)
    arrays: list[ArrayMeta] = Field(default_factory=list, max_length=MAX_FRAMES - 1)


class ErrorInfo(StrictModel):
    """A typed error: the name of an `emauto.errors` class and its message."""

    model_config = _WIRE
    type: str = Field(max_length=64)
    message: str = Field(max_length=4096)


class Reply(StrictModel):
    """Header of a reply to request ``seq``: ``result`` when ok, else ``error``."""

    model_config = _WIRE
    v: int
    seq: int = Field(ge=0)
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    arrays: list[ArrayMeta] = Field(default_factory=list, max_length=MAX_FRAMES - 1)


class SetArgs(StrictModel):
    """Arguments of ``set``: absolute setpoints, SI units."""

    model_config = _WIRE
    setpoints: dict[Annotated[str, Field(max_length=64)], float] = Field(max_length=256)


class AppliedArgs(StrictModel):
    """Arguments of ``applied``: which request of which client (default: the asking one)."""

    model_config = _WIRE
    client: ClientId | None = None
    seq: int = Field(ge=0, lt=1 << 62)


class TwinTruthArgs(StrictModel):
    """Arguments of ``twin_truth``: ``after_s``, the truth that long ahead with no further
    command (the twin's lenses settled; None: now)."""

    model_config = _WIRE
    after_s: float | None = Field(default=None, ge=0, le=60)


class HeartbeatArgs(StrictModel):
    """Arguments of ``heartbeat``: ``for`` names the client id whose liveness it proves (a
    heartbeat thread on its own socket beats for the client that commands)."""

    model_config = _WIRE
    for_client: ClientId | None = Field(default=None, alias="for")


#: Typed ``Any`` for the adapter's construction: mypy's incremental cache sometimes reads the
#: discriminated ``Annotated`` union as a bare union and rejects it; the validated value is
#: a ``RonchigramRequest | ImageRequest`` either way.
_ACQ: TypeAdapter[RonchigramRequest | ImageRequest] = TypeAdapter(cast(Any, AcquisitionRequest))


# --------------------------------------------------------------------------- header codec


def dumps(model: BaseModel) -> bytes:
    """Serialise a header model to compact JSON bytes (never NaN)."""
    return json.dumps(
        model.model_dump(mode="json"), separators=(",", ":"), allow_nan=False
    ).encode()


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def _json_depth_ok(text: str, limit: int) -> bool:
    """True when no JSON array/object in ``text`` nests deeper than ``limit`` (brackets inside
    strings do not count). Linear, no recursion; stops at the first bracket too deep."""
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return False
        else:
            depth -= 1
    return True


def _strict_json(raw: bytes | memoryview, limit: int) -> Any:
    """Decode a header: at most ``limit`` bytes, UTF-8, nesting <= `MAX_JSON_DEPTH`, integers
    of <= `MAX_INT_DIGITS` digits, finite floats; anything else is a `ProtocolError`."""
    if len(raw) > limit:
        raise ProtocolError(f"header of {len(raw)} bytes exceeds the limit of {limit} bytes")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"header is not UTF-8: {exc}") from exc
    if ("[" in text or "{" in text) and not _json_depth_ok(text, MAX_JSON_DEPTH):
        raise ProtocolError(f"header nests deeper than {MAX_JSON_DEPTH} arrays/objects")

    def no_constants(name: str) -> Any:
        raise ProtocolError(f"header contains {name}; non-finite numbers are not allowed")

    def finite(literal: str) -> float:
        if len(literal) > 64:
            raise ProtocolError(f"header number of {len(literal)} characters; at most 64")
        number = float(literal)
        if not math.isfinite(number):
            raise ProtocolError(f"header number {literal[:40]} overflows; expected a finite float")
        return number

    def bounded_int(literal: str) -> int:
        if len(literal.lstrip("-")) > MAX_INT_DIGITS:
            raise ProtocolError(
                f"header integer of {len(literal)} digits; at most {MAX_INT_DIGITS} digits"
            )
        return int(literal)

    try:
        return json.loads(
            text, parse_constant=no_constants, parse_float=finite, parse_int=bounded_int
        )
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"header is not valid JSON: {exc}") from exc
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:  # belt and braces: never past the decoder
        raise ProtocolError(f"header cannot be decoded: {type(exc).__name__}") from exc


def _validate(model: type[BaseModel], value: Any, what: str) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        raise ProtocolError(f"invalid {what}: {detail}") from exc


def _arrays(
    metas: Sequence[ArrayMeta], frames: Sequence[bytes | memoryview], limit: int
) -> dict[str, Any]:
    if len(metas) != len(frames):
        raise ProtocolError(f"header announces {len(metas)} array frame(s), {len(frames)} arrived")
    out: dict[str, np.ndarray] = {}
    for meta, frame in zip(metas, frames, strict=True):
        size = len(frame)
        if size > limit:
            raise ProtocolError(f"array frame of {size} bytes exceeds the limit of {limit} bytes")
        if size != meta.nbytes():
            raise ProtocolError(
                f"array {meta.field}: {meta.dtype}{list(meta.shape)} needs {meta.nbytes()} bytes, "
                f"the frame has {size}"
            )
        if meta.field in out:
            raise ProtocolError(f"array {meta.field} appears twice")
        dtype = np.dtype(meta.dtype).newbyteorder("<")
        out[meta.field] = np.frombuffer(frame, dtype=dtype).reshape(tuple(meta.shape))
    return out


def _array_frame(field: str, array: np.ndarray) -> tuple[ArrayMeta, bytes | memoryview]:
    if array.dtype.name not in DTYPES:
        raise ProtocolError(f"array {field}: dtype {array.dtype} is not one of {DTYPES}")
    contiguous = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    meta = ArrayMeta.model_validate(
        {"field": field, "dtype": array.dtype.name, "shape": list(contiguous.shape)}
    )
    return meta, contiguous.data.cast("B")


# --------------------------------------------------------------------------- requests


def encode_request(
    *,
    client: str,
    seq: int,
    op: str,
    deadline_s: float,
    args: dict[str, Any] | None = None,
    request: RonchigramRequest | ImageRequest | None = None,
) -> list[bytes | memoryview]:
    """Frames of one request; an acquisition's positions travel as a binary frame."""
    body = dict(args or {})
    frames: list[bytes | memoryview] = []
    metas: list[ArrayMeta] = []
    if request is not None:
        dumped = request.model_dump(mode="python")
        if isinstance(request, ImageRequest) and isinstance(request.scan, PositionsScan):
            meta, raw = _array_frame("positions_m", np.asarray(request.scan.positions_m))
            metas.append(meta)
            frames.append(raw)
            dumped["scan"] = {"mode": "positions"}
        body["request"] = _json_ready(dumped)
    header = Request(
        v=PROTOCOL_VERSION,
        client=client,
        seq=seq,
        deadline_s=deadline_s,
        op=op,
        args=body,
        arrays=metas,
    )
    return [dumps(header), *frames]


def _is_positions(request: RonchigramRequest | ImageRequest) -> bool:
    return isinstance(request, ImageRequest) and isinstance(request.scan, PositionsScan)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def decode_request(
    frames: Sequence[bytes | memoryview],
) -> tuple[Request, dict[str, np.ndarray]]:
    """Validate a request's frames: count, total size, header schema, version, array lengths
    (frames may be memoryviews of the received message: nothing is copied before)."""
    if not 1 <= len(frames) <= MAX_FRAMES:
        raise ProtocolError(f"expected 1 to {MAX_FRAMES} frames, got {len(frames)}")
    total = sum(len(frame) for frame in frames)
    if total > MAX_REQUEST_BYTES:
        raise ProtocolError(
            f"request of {total} bytes exceeds the limit of {MAX_REQUEST_BYTES} bytes"
        )
    header = _validate(Request, _strict_json(frames[0], MAX_HEADER_BYTES), "request header")
    if header.v != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {header.v} is not supported; expected {PROTOCOL_VERSION}"
        )
    arrays = _arrays(header.arrays, frames[1:], MAX_REQUEST_FRAME_BYTES)
    return header, arrays


def parse_applied_args(args: dict[str, Any]) -> AppliedArgs:
    """The arguments of an ``applied`` request."""
    parsed: AppliedArgs = _validate(AppliedArgs, args, "applied arguments")
    return parsed


def parse_twin_truth_args(args: dict[str, Any]) -> float | None:
    """How far ahead (s) a ``twin_truth`` request asks for the truth (None: now)."""
    parsed: TwinTruthArgs = _validate(TwinTruthArgs, args, "twin_truth arguments")
    return parsed.after_s


def parse_heartbeat_args(args: dict[str, Any]) -> str | None:
    """The client id a ``heartbeat`` beats for (None: the sender's own)."""
    parsed: HeartbeatArgs = _validate(HeartbeatArgs, args, "heartbeat arguments")
    return parsed.for_client


def parse_set_args(args: dict[str, Any]) -> dict[str, float]:
    """The setpoints of a ``set`` request."""
    parsed: SetArgs = _validate(SetArgs, args, "set arguments")
    return dict(parsed.setpoints)


def parse_acquisition(
    args: dict[str, Any], arrays: dict[str, np.ndarray]
) -> RonchigramRequest | ImageRequest:
    """The acquisition request of an ``acquire`` request (positions from their array frame).

    Strict: the JSON types must be the schema's (``"0.01"`` or ``true`` for a number is
    refused; an integer is a valid float)."""
    if set(args) != {"request"} or not isinstance(args["request"], dict):
        raise ProtocolError(f"acquire expects args {{'request': {{...}}}}, got keys {sorted(args)}")
    body = dict(args["request"])
    scan = body.get("scan")
    positions: np.ndarray | None = None
    if isinstance(scan, dict) and scan.get("mode") == "positions":
        if set(scan) != {"mode"} or "positions_m" not in arrays:
            raise ProtocolError("a positions scan sends positions_m as one binary frame only")
        positions = arrays["positions_m"]
        if positions.dtype != np.float64:
            raise ProtocolError(f"positions_m must be float64, got {positions.dtype}")
        # the JSON part is checked strictly with a placeholder scan; the positions come from
        # their typed binary frame
        body["scan"] = {"mode": "raster", "shape": [1, 1]}
    elif arrays:
        raise ProtocolError(f"unexpected array frame(s) {sorted(arrays)} for this request")
    try:
        request = _ACQ.validate_json(json.dumps(body, allow_nan=False), strict=True)
        if positions is not None:
            assert isinstance(request, ImageRequest)
            request = request.model_copy(update={"scan": PositionsScan(positions_m=positions)})
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ProtocolError(f"invalid acquisition request: {detail}") from exc
    return request


def parse_strict(model: type[ModelT], value: Any, what: str) -> ModelT:
    """Validate a JSON value against ``model`` in strict JSON mode (no ``"1"`` or ``true``
    for a number); a `ProtocolError` names the bad fields."""
    try:
        return model.model_validate_json(json.dumps(value, allow_nan=False), strict=True)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        raise ProtocolError(f"invalid {what}: {detail}") from exc


# --------------------------------------------------------------------------- replies


def encode_reply(
    seq: int, *, result: Any = None, error: BaseException | None = None
) -> list[bytes | memoryview]:
    """Frames of one reply; a `Frame` result sends its data and positions as binary frames."""
    frames: list[bytes | memoryview] = []
    metas: list[ArrayMeta] = []
    if error is not None:
        info = ErrorInfo(type=type(error).__name__[:64], message=str(error)[:4096])
        return [dumps(Reply(v=PROTOCOL_VERSION, seq=seq, ok=False, error=info))]
    if isinstance(result, Frame):
        body = result.model_dump(mode="json", exclude={"data", "positions_m", "request"})
        body["request"] = _json_ready(result.request.model_dump(mode="python"))
        if isinstance(result.request, ImageRequest) and isinstance(
            result.request.scan, PositionsScan
        ):
            body["request"]["scan"] = {"mode": "positions"}
        for field in ("data", "positions_m"):
            array = getattr(result, field)
            if array is not None:
                meta, raw = _array_frame(field, np.asarray(array))
                metas.append(meta)
                frames.append(raw)
        result = body
    elif isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    reply = Reply(v=PROTOCOL_VERSION, seq=seq, ok=True, result=result, arrays=metas)
    return [dumps(reply), *frames]


def decode_reply(frames: Sequence[bytes]) -> tuple[Reply, dict[str, np.ndarray]]:
    """Validate a reply's frames."""
    if not 1 <= len(frames) <= MAX_FRAMES:
        raise ProtocolError(f"expected 1 to {MAX_FRAMES} reply frames, got {len(frames)}")
    header = _validate(Reply, _strict_json(frames[0], MAX_HEADER_BYTES), "reply header")
    if header.v != PROTOCOL_VERSION:
        raise ProtocolError(f"reply protocol version {header.v}, expected {PROTOCOL_VERSION}")
    return header, _arrays(header.arrays, frames[1:], MAX_REPLY_FRAME_BYTES)


def frame_from_reply(result: Any, arrays: dict[str, np.ndarray]) -> Frame:
    """Rebuild a `Frame` from a reply's result and its array frames."""
    if not isinstance(result, dict) or "data" not in arrays:
        raise ProtocolError("an acquire reply needs a result object and a data array frame")
    body = dict(result)
    request = body.get("request")
    scan = request.get("scan") if isinstance(request, dict) else None
    if isinstance(request, dict) and isinstance(scan, dict) and scan.get("mode") == "positions":
        if "positions_m" not in arrays:
            raise ProtocolError("a positions frame needs its positions_m array frame")
        positions = {"mode": "positions", "positions_m": arrays["positions_m"]}
        body["request"] = {**request, "scan": positions}
    body["data"] = arrays["data"]
    if "positions_m" in arrays:
        body["positions_m"] = arrays["positions_m"]
    try:
        return Frame.model_validate(body)
    except ValidationError as exc:
        raise ProtocolError(f"invalid frame in reply: {exc.errors()[:3]}") from exc
