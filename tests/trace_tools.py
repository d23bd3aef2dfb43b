"""Load the recorded ComfyUI traces and reduce websocket frames to comparable tuples.

Records have the trace files' shape: `{"t", "msg": {"type", "data"}}` for text frames and
`{"t", "binary": True, "event_type", "image_type" | "metadata", "image_magic_hex", ...}` for
binary frames. `record_text` / `record_binary` turn live frames into the same shape, so a live
run and a recording go through the same `normalise`.

`normalise` keeps what the protocol promises (message types and order, key sets, node ids,
progress values *with* their int/float type, cached node lists, output shapes, error fields,
binary frame headers) and drops what varies between runs: timestamps, times, prompt ids (mapped
to <P0>, <P1>, ... in order of appearance by an `IdMap`), tracebacks, filename counters and
PreviewImage's random temp infix, set-ordered lists.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

TRACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "comfyui-traces"

ABSENT = "<absent>"
Record = dict[str, Any]
Frame = tuple[Any, ...]


# --- loading -------------------------------------------------------------------------------------


def trace_path(name: str, suffix: str) -> Path:
    return TRACES_DIR / f"{name}.{suffix}"


def load_ws_trace(name: str) -> list[Record]:
    """Frames of `NAME.ws.jsonl` (name may be "success", "success.observer", "reconnect.first")."""
    lines = trace_path(name, "ws.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _load_json(name: str, suffix: str) -> Any:
    return json.loads(trace_path(name, suffix).read_text())


def load_prompt(name: str) -> dict[str, Any]:
    """The posted prompt (for queue_* traces: {"first": ..., "second": ...})."""
    result: dict[str, Any] = _load_json(name, "prompt.json")
    return result


def load_post_calls(name: str) -> list[dict[str, Any]]:
    """The recorded HTTP calls (label, method, path, status, body...)."""
    result: list[dict[str, Any]] = _load_json(name, "post.json")
    return result


def load_history(name: str) -> dict[str, Any]:
    """GET /history/<id> answers, keyed by prompt id (None for a prompt that never ran)."""
    result: dict[str, Any] = _load_json(name, "history.json")
    return result


def load_upload(name: str) -> dict[str, Any]:
    result: dict[str, Any] = _load_json(name, "upload.json")
    return result


def has_trace(name: str, suffix: str = "ws.jsonl") -> bool:
    return trace_path(name, suffix).exists()


# --- live frames in trace shape ------------------------------------------------------------------


def record_text(message: dict[str, Any], t: float = 0.0) -> Record:
    return {"t": t, "msg": message}


def record_binary(data: bytes, t: float = 0.0) -> Record:
    """Describe a binary frame the way the recorder did (header fields decoded)."""
    event_type = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    record: Record = {
        "t": t,
        "binary": True,
        "len": len(data),
        "first8hex": data[:8].hex(),
        "event_type": event_type,
    }
    image = b""
    if event_type == 1 and len(data) >= 8:
        image_type = struct.unpack(">I", data[4:8])[0]
        record["image_type"] = {1: "JPEG", 2: "PNG"}.get(image_type, image_type)
        image = data[8:]
    elif event_type == 4 and len(data) >= 8:
        size = struct.unpack(">I", data[4:8])[0]
        record["metadata"] = json.loads(data[8 : 8 + size])
        image = data[8 + size :]
    record["image_magic_hex"] = image[:4].hex()
    return record


# --- normalising ---------------------------------------------------------------------------------


class IdMap:
    """Maps prompt ids to <P0>, <P1>, ... in order of first appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value not in self.ids:
            self.ids[value] = f"<P{len(self.ids)}>"
        return self.ids[value]

    def known(self, value: Any) -> Any:
        """The placeholder for an id already seen; anything else unchanged."""
        return self.ids.get(value, value) if isinstance(value, str) else value


def canon(value: Any) -> str:
    """A hashable, order-independent rendering of JSON data."""
    return json.dumps(value, sort_keys=True)


def num(value: Any) -> str:
    """repr keeps the int/float distinction (1 vs 1.0) that `==` would hide."""
    return repr(value)


def normalise_filename(name: Any) -> Any:
    if not isinstance(name, str):
        return name
    name = re.sub(r"_temp_[a-z]{5}_", "_temp_*_", name)  # PreviewImage's random infix
    return re.sub(r"\d+", "N", name)  # save counters differ between runs


def normalise_output(output: Any) -> str:
    """An `executed` output / history output: keys kept, file names without counters."""
    if not isinstance(output, dict):
        return canon(output)
    result: dict[str, Any] = {}
    for key, items in output.items():
        if isinstance(items, list):
            result[key] = [
                {
                    k: normalise_filename(v) if k in ("filename", "workflow", "fullpath") else v
                    for k, v in item.items()
                }
                if isinstance(item, dict)
                else item
                for item in items
            ]
        else:
            result[key] = items
    return canon(result)


def _shape(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "list[str]"
    return type(value).__name__


def _input_values(inputs: Any) -> Any:
    """execution_error current_inputs: names and scalar values; objects (a tensor's str in
    ComfyUI, a FakeImage in the fake) and strings become "<str>"."""
    if not isinstance(inputs, dict):
        return canon(inputs)
    return tuple(
        sorted(
            (name, tuple("<str>" if isinstance(v, str) else num(v) for v in values))
            for name, values in inputs.items()
        )
    )


def _progress_nodes(nodes: dict[str, Any], ids: IdMap) -> tuple[Any, ...]:
    return tuple(
        (
            node_id,
            num(entry.get("value")),
            num(entry.get("max")),
            entry.get("state"),
            ids(entry.get("prompt_id")),
            entry.get("display_node_id"),
            entry.get("parent_node_id"),
            entry.get("real_node_id"),
            tuple(sorted(entry)),
        )
        for node_id, entry in nodes.items()
    )


def _body(kind: str, data: dict[str, Any], ids: IdMap) -> tuple[Any, ...]:
    pid = ids(data["prompt_id"]) if "prompt_id" in data else ABSENT
    if kind == "status":
        return (data.get("status", {}).get("exec_info", {}).get("queue_remaining"),)
    if kind in ("execution_start", "execution_success"):
        return (pid,)
    if kind == "execution_cached":
        return (pid, tuple(data.get("nodes", [])))
    if kind == "executing":
        return (data.get("node"), data.get("display_node", ABSENT), pid)
    if kind == "executed":
        return (
            data.get("node"),
            data.get("display_node"),
            pid,
            normalise_output(data.get("output")),
        )
    if kind == "progress":
        return (num(data.get("value")), num(data.get("max")), pid, data.get("node"))
    if kind == "progress_state":
        return (pid, _progress_nodes(data.get("nodes", {}), ids))
    if kind in ("execution_error", "execution_interrupted"):
        common = (
            pid,
            data.get("node_id"),
            data.get("node_type"),
            tuple(sorted(data.get("executed", []))),
        )
        if kind == "execution_interrupted":
            return common
        return (
            *common,
            data.get("exception_message"),
            data.get("exception_type"),
            _shape(data.get("traceback")),
            _input_values(data.get("current_inputs")),
            tuple(sorted(data.get("current_outputs", []))),
        )
    rest = {k: v for k, v in data.items() if k != "timestamp"}
    return (canon(normalise_json(rest, ids)),)


def _binary(record: Record, ids: IdMap) -> Frame:
    metadata = record.get("metadata")
    if isinstance(metadata, dict):
        metadata = canon({k: ids(v) if k == "prompt_id" else v for k, v in metadata.items()})
    return (
        "<binary>",
        record.get("event_type"),
        record.get("image_type"),
        metadata,
        record.get("image_magic_hex"),
    )


def normalise_frame(record: Record, ids: IdMap) -> Frame:
    """(type, sorted data keys, *type-specific fields) for a text frame; ("<binary>", event
    type, image type, metadata, image magic) for a binary one."""
    if record.get("binary"):
        return _binary(record, ids)
    message = record["msg"]
    kind = message.get("type")
    data = message.get("data")
    if not isinstance(data, dict):
        return (kind, canon(data))
    return (kind, tuple(sorted(data)), *_body(kind, data, ids))


def normalise(records: list[Record], ids: IdMap | None = None) -> list[Frame]:
    ids = ids if ids is not None else IdMap()
    return [normalise_frame(r, ids) for r in records]


def split_status(frames: list[Frame]) -> tuple[list[Frame], list[Frame]]:
    """(status frames, everything else). A status caused by another HTTP request can land
    anywhere between a running prompt's frames, so racing scenarios compare these apart."""
    statuses = [f for f in frames if f[0] == "status"]
    return statuses, [f for f in frames if f[0] != "status"]


def normalise_json(value: Any, ids: IdMap) -> Any:
    """Generic clean-up of an HTTP body: known prompt ids mapped, tracebacks reduced to
    their shape, timestamps dropped."""
    if isinstance(value, dict):
        return {
            ids.known(k): _shape(v) if k == "traceback" else normalise_json(v, ids)
            for k, v in value.items()
            if k != "timestamp"
        }
    if isinstance(value, list):
        return [normalise_json(v, ids) for v in value]
    return ids.known(value)


def history_shape(history: dict[str, Any], ids: IdMap) -> dict[str, Any]:
    """/history answers reduced to what must match: keys, prompt tuple shape, outputs,
    status (status_str, completed, message types and their keys), meta."""
    return {
        ids(pid): None if entry is None else _history_entry(entry, ids)
        for pid, entry in history.items()
    }


def _history_entry(entry: dict[str, Any], ids: IdMap) -> dict[str, Any]:
    number, prompt_id, prompt, extra_data, outputs = entry["prompt"]
    status = entry.get("status") or {}
    return {
        "keys": sorted(entry),
        "prompt": (
            type(number).__name__,
            ids(prompt_id),
            canon(prompt),
            sorted(extra_data),
            sorted(outputs),
        ),
        "outputs": {node: normalise_output(out) for node, out in entry.get("outputs", {}).items()},
        "status": (
            status.get("status_str"),
            status.get("completed"),
            tuple((event, tuple(sorted(data))) for event, data in status.get("messages", [])),
        ),
        "meta": canon(entry.get("meta")),
    }
