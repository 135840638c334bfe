"""What a Deployment manifest's TF Serving container says, for ``deployment: {manifest: ...}``.

The container's ``command`` and ``args`` are expanded as the kubelet expands them, from its
``env`` (literal values and ``configMapKeyRef``) and ``envFrom`` ConfigMaps found in the same
manifest file (kubectl applies multi-document files whole). The TF Serving flags that stand
for scenario fields are read into them (:mod:`sim.tfserving_flags`); every other item is kept
as given, for ``scalelab manifests`` to emit. Nothing is dropped without a word: a flag the
simulation needs but cannot read (a reference to a Secret, or to a ConfigMap in another file)
is an error unless the scenario sets that field itself.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sim.tfserving_flags import ReadFlags, expand, read_flags, serving_fields


@dataclass(frozen=True)
class Container:
    """A manifest's first container, its flags read, and where it came from (for errors)."""

    where: str
    flags: ReadFlags
    config_maps: dict[str, dict[str, str]]
    env: dict[str, str]
    unreadable: dict[str, str]
    """Variable names the container defines from a source scalelab cannot read, and which."""
    mounts: list[tuple[str, str, str | None, dict[str, str] | None]]
    """ConfigMap volumes: (mountPath, ConfigMap name, subPath, items' path -> key)."""


def config_maps(docs: list[Any]) -> dict[str, dict[str, str]]:
    """The ConfigMaps in a manifest file, by name: their ``data``."""
    found: dict[str, dict[str, str]] = {}
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            name = str((doc.get("metadata") or {}).get("name", ""))
            found[name] = {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
    return found


def container_env(
    container: dict[str, Any], maps: dict[str, dict[str, str]], where: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The variables ``$(VAR)`` can use, and the names defined from unreadable sources.

    ``envFrom`` first, then ``env`` over it (Kubernetes: env wins over envFrom); an ``env``
    value may use the variables defined before it.
    """
    env: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef") or {}
        prefix = str(source.get("prefix") or "")
        if ref.get("name") in maps:
            env.update({prefix + k: v for k, v in maps[ref["name"]].items()})
        elif ref:
            unreadable[f"{prefix}*"] = f"ConfigMap {ref.get('name')} (not in {where})"
        else:
            unreadable[f"{prefix}*"] = "a Secret"
    for item in container.get("env") or []:
        name = str(item.get("name"))
        unreadable.pop(name, None)
        key_ref = (item.get("valueFrom") or {}).get("configMapKeyRef") or {}
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)[0]
        elif maps.get(str(key_ref.get("name")), {}).get(str(key_ref.get("key"))) is not None:
            env[name] = maps[key_ref["name"]][key_ref["key"]]
        else:
            env.pop(name, None)
            kind = next(iter(item["valueFrom"]), "valueFrom")
            unreadable[name] = f"{kind} {key_ref.get('name', '')} (not in {where})".replace(
                "  ", " "
            )
    return env, unreadable


def read_container(docs: list[Any], pod: dict[str, Any], where: str) -> Container:
    """Expand the first container's argv and split it into field flags and kept items."""
    container = (pod.get("containers") or [{}])[0]
    maps = config_maps(docs)
    volumes = {
        v.get("name"): v["configMap"] for v in pod.get("volumes") or [] if v.get("configMap")
    }
    mounts = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name"))
        if volume is not None:
            items = volume.get("items")
            by_path = {str(i["path"]): str(i["key"]) for i in items} if items else None
            mounts.append(
                (
                    str(mount.get("mountPath", "")),
                    str(volume.get("name")),
                    mount.get("subPath"),
                    by_path,
                )
            )
    env, unreadable = container_env(container, maps, where)

    def expanded(items: Any) -> list[str]:
        return [expand(str(item), env, keep_escapes=True)[0] for item in items or []]

    command = container.get("command")
    flags = read_flags(
        expanded(command) if command is not None else None,
        expanded(container.get("args")),
        f"{where}: spec.template.spec.containers[0]",
    )
    return Container(where, flags, maps, env, unreadable, mounts)


def flag_value(container: Container, name: str) -> str | None:
    """A field flag's value, fully expanded; a reference left unexpanded is an error that
    says where the variable comes from."""
    value = container.flags.values[name]
    if value is None:
        return None
    text, unresolved = expand(value, {})
    if unresolved:
        var = sorted(unresolved)[0]
        source = container.unreadable.get(var) or next(
            (
                s
                for k, s in container.unreadable.items()
                if k.endswith("*") and var.startswith(k[:-1])
            ),
            "nowhere in the container's env or envFrom",
        )
        raise ValueError(
            f"{container.where}: {container.flags.where[name]} refers to $({var}), defined by "
            f"{source}; put that ConfigMap in the same file (kubectl applies multi-document "
            f"files) or set the scenario's {name.replace('model_name', 'deployment.model_name')}"
        )
    return text


def deployment_fields(container: Container, given: Collection[str]) -> dict[str, Any]:
    """``model_name``, ``command`` and ``args`` for the scenario's deployment."""
    out: dict[str, Any] = {"args": container.flags.args}
    if container.flags.command is not None:
        out["command"] = container.flags.command
    if "model_name" in container.flags.values and "model_name" not in given:
        value = flag_value(container, "model_name")
        if value is None:
            raise ValueError(
                f"{container.where}: {container.flags.where['model_name']} has no value; "
                "write --model_name=NAME"
            )
        out["model_name"] = value
    return out


def serving_from_container(container: Container, given: Collection[str]) -> dict[str, Any]:
    """The ``serving.*`` fields the container's flags set (the scenario's own ``given``
    fields are not read: they win)."""
    resolved = ReadFlags(
        values={
            name: flag_value(container, name)
            for name in container.flags.values
            if name != "model_name"
        },
        where=container.flags.where,
    )
    return serving_fields(
        resolved, container.where, lambda path: batching_file(container, path), set(given)
    )


def batching_file(container: Container, path: str) -> str:
    """The text of ``--batching_parameters_file``: the ConfigMap key mounted at that path
    (a configMap volume: one file per key, or per ``items`` entry; ``subPath`` mounts one)."""
    for mount_path, name, sub_path, by_path in container.mounts:
        if sub_path is not None:
            file = str(sub_path) if path == mount_path else None
        else:
            prefix = mount_path.rstrip("/") + "/"
            file = path[len(prefix) :] if path.startswith(prefix) else None
        if file is None:
            continue
        key = file if by_path is None else by_path.get(file)
        if name not in container.config_maps:
            raise ValueError(
                f"{container.where}: --batching_parameters_file={path} is in ConfigMap {name}, "
                "which is not in this file; put it in the same file or set serving.batching"
            )
        data = container.config_maps[name]
        if key is None or key not in data:
            raise ValueError(
                f"{container.where}: --batching_parameters_file={path}: ConfigMap {name} has "
                f"no key for {file!r} (keys: {sorted(data)})"
            )
        return data[key]
    raise ValueError(
        f"{container.where}: --batching_parameters_file={path} is not in a configMap volume of "
        "the container; scalelab reads it from a ConfigMap in the same file (or set "
        "serving.batching)"
    )
