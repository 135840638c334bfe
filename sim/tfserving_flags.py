"""TF Serving's command line, read and written: the flags that stand for scenario fields.

``scalelab manifests`` writes ``serving.*`` as ``tensorflow_model_server`` flags, and a
``deployment: {manifest: ...}`` scenario reads them back, so a Deployment means the same
thing to the simulator and to the cluster. The rules are TF Serving 2.8's (the lab's image):

- each argv item is one flag, ``--name=value`` (a bool also ``--name``), matched by name;
  the last occurrence wins and ``--`` ends the flags
  (tensorflow/core/util/command_line_flags.cc, ``Flags::Parse``);
- flags, types and defaults: tensorflow_serving/model_servers/main.cc and server.h;
- how the thread flags combine and when a batching file is allowed: server.cc,
  ``Server::BuildAndStart``.

Kubernetes expands ``$(VAR)`` in ``command`` and ``args`` from the container's environment
(``$$`` escapes, an undefined name stays as written: kubernetes
third_party/forked/golang/expansion/expand.go); :func:`expand` does the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FIELD_FLAGS: dict[str, str] = {
    "model_name": "deployment.model_name",
    "rest_api_timeout_in_ms": "serving.request_timeout",
    "rest_api_num_threads": "serving.rest_api_num_threads",
    "tensorflow_intra_op_parallelism": "serving.intra_op_threads",
    "tensorflow_inter_op_parallelism": "serving.inter_op_threads",
    "tensorflow_session_parallelism": "serving.intra_op_threads and serving.inter_op_threads",
    "enable_batching": "serving.batching",
    "batching_parameters_file": "serving.batching",
}
"""Flags that stand for a scenario field: read into it from a manifest, written from it, and
never kept as a plain arg (one setting, one place)."""

REFUSED_FLAGS: dict[str, str] = {
    "model_config_file": "it replaces --model_name/--model_base_path (server.cc "
    "BuildSingleModelConfig is skipped), and scalelab serves the one model deployment.model_name",
    "platform_config_file": "it replaces the session config, so TF Serving ignores "
    "--enable_batching and the thread flags the simulation uses (server.cc)",
}
"""Flags that would make the real server differ from the simulated one, with why."""

BATCHING_FIELDS = (
    "max_batch_size",
    "batch_timeout_micros",
    "num_batch_threads",
    "max_enqueued_batches",
)
"""The BatchingParameters fields the simulator models (session_bundle_config.proto)."""

_BOOL_FLAGS = {"enable_batching"}
_INT = re.compile(r"\s*[+-]?\d+")
_SHELLS = re.compile(r"(^|/)(ba|da|z)?sh$")


@dataclass
class ReadFlags:
    """What a container's ``command`` + ``args`` say: field flags (last value each, as
    written) and the items kept as given."""

    values: dict[str, str | None] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    args: list[str] = field(default_factory=list)


def flag_name(item: str) -> tuple[str, str | None] | None:
    """``--name=value`` -> ``(name, value)``, ``--name`` -> ``(name, None)``, else None."""
    if not item.startswith("--") or item == "--":
        return None
    name, eq, value = item[2:].partition("=")
    return name, (value if eq else None)


def expand(
    text: str, env: Mapping[str, str], *, keep_escapes: bool = False
) -> tuple[str, set[str]]:
    """Kubernetes' ``$(VAR)`` expansion, and the names left unexpanded.

    Defined names are replaced, ``$$`` is ``$``, undefined names and an unclosed ``$(`` stay
    as written. With ``keep_escapes`` the result is still in that syntax (``$$`` kept, ``$`` in
    values doubled), for an item that Kubernetes will expand again.
    """
    out: list[str] = []
    unresolved: set[str] = set()
    i = 0
    while i < len(text):
        if text[i] != "$" or i + 1 == len(text):
            out.append(text[i])
            i += 1
        elif text[i + 1] == "$":
            out.append("$$" if keep_escapes else "$")
            i += 2
        elif text[i + 1] == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append(text[i:])
                break
            name = text[i + 2 : end]
            if name in env:
                out.append(env[name].replace("$", "$$") if keep_escapes else env[name])
            else:
                unresolved.add(name)
                out.append(text[i : end + 1])
            i = end + 1
        else:
            out.append("$")
            i += 1
    return "".join(out), unresolved


def read_flags(command: Sequence[str] | None, args: Sequence[str], where: str) -> ReadFlags:
    """Split a container's argv into field flags and the items kept as given.

    ``where`` names the source in errors. A shell command (``sh -c "..."``) is refused: its
    flags are inside one string, where scalelab cannot read them.
    """
    if command and _SHELLS.search(str(command[0])):
        raise ValueError(
            f"{where}: command {list(command)} runs a shell; scalelab reads TF Serving's flags "
            "one per item: give the server's flags as args (the image's entrypoint runs "
            "tensorflow_model_server)"
        )
    read = ReadFlags()
    done = False
    kept: dict[str, list[str]] = {"command": [], "args": []}
    for part, items in (("command", command or []), ("args", args)):
        for index, raw in enumerate(items):
            item = str(raw)
            parsed = None if done else flag_name(item)
            if item == "--":
                done = True
            if parsed is not None and parsed[0] in REFUSED_FLAGS:
                raise ValueError(f"{where}: {part}[{index}] {item!r}: {REFUSED_FLAGS[parsed[0]]}")
            if parsed is not None and parsed[0] in FIELD_FLAGS:
                read.values[parsed[0]] = parsed[1]
                read.where[parsed[0]] = f"{part}[{index}] {item!r}"
                continue
            kept[part].append(item)
    read.command = kept["command"] if command is not None else None
    read.args = kept["args"]
    return read


def _int(read: ReadFlags, name: str, where: str) -> int:
    value = read.values[name]
    if value is None or not _INT.fullmatch(value):
        raise ValueError(f"{where}: {read.where[name]}: --{name} takes an integer")
    return int(value)


def _bool(read: ReadFlags, name: str, where: str) -> bool:
    value = read.values[name]
    if value not in (None, "true", "false"):
        raise ValueError(f"{where}: {read.where[name]}: --{name} takes nothing, =true or =false")
    return value != "false"


def serving_fields(
    read: ReadFlags, where: str, batching_file: Callable[[str], str], skip: set[str]
) -> dict[str, Any]:
    """The ``serving.*`` fields the flags set, as TF Serving 2.8 would apply them; fields in
    ``skip`` (the scenario gives them) are not read. ``batching_file`` returns the text of a
    ``--batching_parameters_file`` path (or raises ValueError saying why it cannot)."""
    out: dict[str, Any] = {}
    v = read.values
    if "rest_api_timeout_in_ms" in v and "request_timeout" not in skip:
        out["request_timeout"] = _int(read, "rest_api_timeout_in_ms", where) / 1000
    if "rest_api_num_threads" in v and "rest_api_num_threads" not in skip:
        out["rest_api_num_threads"] = _int(read, "rest_api_num_threads", where)
    threads = {
        k: _int(read, f"tensorflow_{k}_parallelism", where)
        if f"tensorflow_{k}_parallelism" in v
        else 0
        for k in ("intra_op", "inter_op", "session")
    }
    if threads["session"] > 0 and (threads["intra_op"] > 0 or threads["inter_op"] > 0):
        # server.cc: all three is an error; with one of intra/inter, session is ignored.
        raise ValueError(
            f"{where}: {read.where['tensorflow_session_parallelism']}: TF Serving ignores it (or, "
            "with both intra and inter set, refuses to start) next to "
            "--tensorflow_intra_op_parallelism/--tensorflow_inter_op_parallelism; give one or "
            "the other"
        )
    intra, inter = (
        (threads["intra_op"], threads["inter_op"])
        if threads["session"] == 0
        else (threads["session"], threads["session"])
    )
    # 0 is TF Serving's default: TensorFlow picks (all the node's cores), which None means.
    for key, value in (("intra_op_threads", intra), ("inter_op_threads", inter)):
        if value > 0 and key not in skip:
            out[key] = value
    enabled = _bool(read, "enable_batching", where) if "enable_batching" in v else False
    path = v.get("batching_parameters_file")
    if "batching" not in skip:
        if path and not enabled:
            raise ValueError(
                f"{where}: {read.where['batching_parameters_file']} without --enable_batching: "
                "TF Serving refuses to start (server.cc); add --enable_batching"
            )
        if enabled:
            out["batching"] = (
                parse_batching(batching_file(path), f"{where}: {path}") if path else {}
            )
    return out


_WRAPPED = re.compile(r"\s*(\w+)\s*:?\s*\{\s*value\s*:\s*([+-]?\d+)\s*\}")
_NAME = re.compile(r"\s*(\w+)")


def parse_batching(text: str, where: str) -> dict[str, int]:
    """A BatchingParameters text proto (wrapper-typed fields, ``name { value: N }``) as the
    scenario's ``serving.batching``; a field the simulator does not model is refused."""
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    out: dict[str, int] = {}
    pos = 0
    while body[pos:].strip():
        match = _WRAPPED.match(body, pos)
        found = match or _NAME.match(body, pos)
        if found is None:
            rest = body[pos:].strip()[:40]
            raise ValueError(f"{where}: cannot read {rest!r} as a BatchingParameters field")
        name = found.group(1)
        if name not in BATCHING_FIELDS:
            raise ValueError(
                f"{where}: BatchingParameters field {name!r} is not simulated; the simulator "
                f"models {', '.join(BATCHING_FIELDS)}"
            )
        if match is None:
            raise ValueError(f"{where}: write {name} as {name} {{ value: N }}")
        out[name] = int(match.group(2))
        pos = match.end()
    return out


def batching_text(batching: Mapping[str, Any]) -> str:
    """``serving.batching`` as a BatchingParameters text proto; unset fields left out, so TF
    Serving's defaults apply as simulated."""
    return "".join(
        f"{name} {{ value: {batching[name]} }}\n"
        for name in BATCHING_FIELDS
        if batching.get(name) is not None
    )


def serving_args(
    request_timeout: float, rest_api_num_threads: int | None, intra: int | None, inter: int | None
) -> list[str]:
    """The flags for ``serving.*`` (batching aside: it needs a file); unset thread counts are
    left out, so TF Serving's defaults apply as simulated."""
    flags = [f"--rest_api_timeout_in_ms={round(request_timeout * 1000)}"]
    if rest_api_num_threads is not None:
        flags.append(f"--rest_api_num_threads={rest_api_num_threads}")
    if intra is not None:
        flags.append(f"--tensorflow_intra_op_parallelism={intra}")
    if inter is not None:
        flags.append(f"--tensorflow_inter_op_parallelism={inter}")
    return flags


def field_flag_in(items: Sequence[str]) -> tuple[int, str] | None:
    """The first item that is a field flag (index, flag name), for refusing a conflict."""
    for index, item in enumerate(items):
        if item == "--":
            return None
        parsed = flag_name(str(item))
        if parsed is not None and parsed[0] in FIELD_FLAGS | REFUSED_FLAGS:
            return index, parsed[0]
    return None
