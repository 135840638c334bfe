"""Reading scenario files and ``--set`` overrides, with errors that name file, field and fix."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sim.bundled import resolve_scenario
from sim.errors import Problem, ScenarioError
from sim.scenario import Scenario

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(path: str) -> list[str | int]:
    """``hpa.metrics[0].resource.name`` -> ``["hpa", "metrics", 0, "resource", "name"]``."""
    parts: list[str | int] = []
    pos = 0
    for match in _SEGMENT.finditer(path):
        gap = path[pos : match.start()]
        if gap not in ("", "."):
            raise ValueError(f"malformed field path {path!r}")
        parts.append(int(match.group(2)) if match.group(2) is not None else match.group(1))
        pos = match.end()
    if pos != len(path) or not parts or not isinstance(parts[0], str):
        raise ValueError(f"malformed field path {path!r}; expected e.g. hpa.metrics[0].type")
    return parts


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at a dotted path, creating mappings on the way (the schema judges them)."""
    parts = parse_path(path)
    node: Any = data
    for here, nxt in itertools.pairwise(parts):
        if isinstance(here, int):
            if not isinstance(node, list) or here >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise ValueError(f"{path}: index [{here}] is out of range (the list has {size})")
            node = node[here]
            continue
        if not isinstance(node, dict):
            raise ValueError(f"{path}: {here!r} is not inside a mapping")
        if node.get(here) is None:
            node[here] = [] if isinstance(nxt, int) else {}
        node = node[here]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ValueError(f"{path}: index [{last}] is out of range")
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ValueError(f"{path}: cannot set {last!r} on a {type(node).__name__}")


def parse_override(text: str) -> tuple[str, Any]:
    """``hpa.maxReplicas=6`` -> ``("hpa.maxReplicas", 6)``; the value is read as YAML."""
    if "=" not in text:
        raise ValueError(f"--set expects dotted.path=value, got {text!r}")
    path, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path.strip(), value


def _problems(err: ValidationError) -> list[Problem]:
    problems = []
    for item in err.errors():
        loc = "".join(
            f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
            for i, p in enumerate(item["loc"])
        )
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; unknown fields are not ignored)"
        problems.append(Problem(field=loc, given=item.get("input"), allowed=message))
    return problems


def build_scenario(
    data: dict[str, Any],
    source: str,
    overrides: list[str] | None = None,
    base_dir: Path | None = None,
) -> Scenario:
    """Validate a raw mapping (plus overrides) into a Scenario, or raise ScenarioError."""
    data = with_overrides(data, source, overrides)
    try:
        return Scenario.model_validate(data, context={"base_dir": base_dir or Path(".")})
    except ValidationError as err:
        where = source + (" with --set " + " ".join(overrides) if overrides else "")
        raise ScenarioError(where, _problems(err)) from None


#: Fields that name a file: in a scenario file relative to that file's directory (as
#: kustomize reads a kustomization's paths); typed on the command line (``--set``) relative to
#: the current directory, as every other command-line path is.
FILE_FIELDS = ("deployment.manifest", "hpa.manifest", "load.rate.file", "load.shape.file")
PROFILE_FILE = ("serving.profile",)
PROFILE_SUFFIXES = (".yaml", ".yml", ".json")  # sim.serving.profile.profile_for reads these


def names_file(dotted: str, value: Any) -> bool:
    """Whether ``value`` at ``dotted`` is a file path (a profile only by its suffix: a bare
    name is a packaged profile family)."""
    if not isinstance(value, str) or not value:
        return False
    if dotted in PROFILE_FILE:
        return value.endswith(PROFILE_SUFFIXES)
    return dotted in FILE_FIELDS


def command_line_paths(path: str, value: Any, cwd: Path | None = None) -> Any:
    """``value`` set at ``path`` from the command line, with the files it names made absolute
    against ``cwd`` (default: the current directory), also inside a mapping set whole
    (``--set load.rate={kind: replay, file: r.csv}``)."""
    here = cwd or Path.cwd()

    def absolute(dotted: str, item: Any) -> Any:
        if names_file(dotted, item) and not Path(item).is_absolute():
            return str(here / item)
        if isinstance(item, dict):
            return {k: absolute(f"{dotted}.{k}", v) for k, v in item.items()}
        return item

    return absolute(path, value)


def with_overrides(data: dict[str, Any], source: str, overrides: list[str] | None) -> dict:
    """A copy of the raw mapping with ``--set`` overrides applied (ScenarioError if one is
    malformed); file paths in them are taken from the current directory."""
    data = copy.deepcopy(data)
    for text in overrides or []:
        try:
            path, value = parse_override(text)
            set_path(data, path, command_line_paths(path, value))
        except ValueError as err:
            raise ScenarioError(
                f"{source} (--set {text})", [Problem(text, text, str(err))]
            ) from None
    return data


def read_scenario_data(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as err:
        raise ScenarioError(
            str(path), [Problem("", str(path), f"cannot read: {err.strerror}")]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ScenarioError(str(path), [Problem("", "<file>", f"not valid YAML: {err}")]) from None
    if data is None:
        # Not a run of every default: an empty file is almost always a mistake.
        raise ScenarioError(
            str(path),
            [
                Problem(
                    "",
                    text.strip()[:40],
                    "empty scenario: the file holds no settings; copy scenarios/gsp777.yaml "
                    "and change what differs",
                )
            ],
        )
    if not isinstance(data, dict):
        raise ScenarioError(str(path), [Problem("", data, "the top level must be a mapping")])
    return data


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read and validate a scenario file; ``name`` defaults to the file's stem."""
    return read_scenario(path, overrides)[0]


def read_scenario(
    path: str | Path, overrides: list[str] | None = None
) -> tuple[Scenario, dict[str, Any]]:
    """The validated scenario and the raw mapping it came from (overrides applied), for
    :func:`sim.lint.scenario_notes`. ``path`` may be a packaged scenario's name (``gsp777``)."""
    path = resolve_scenario(path)
    data = read_scenario_data(path)
    data.setdefault("name", path.stem)
    scenario = build_scenario(data, str(path), overrides, base_dir=path.parent)
    return scenario, with_overrides(data, str(path), overrides)


def scenario_json(scenario: Scenario) -> str:
    """Canonical JSON of a scenario, with every default filled in."""
    return json.dumps(scenario.model_dump(mode="json", by_alias=True), sort_keys=True)


def scenario_sha256(scenario: Scenario) -> str:
    return hashlib.sha256(scenario_json(scenario).encode()).hexdigest()


def dump_scenario(scenario: Scenario, path: Path) -> None:
    """Write a scenario that ``scalelab run`` reads back to the same Scenario (explicit nulls
    stay: ``readinessProbe: null`` must not come back as the default probe), durations with
    their units."""
    from sim.lint import with_units

    data = with_units(scenario, scenario.model_dump(mode="json", by_alias=True))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
