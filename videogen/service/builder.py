"""The job API as a Ray Serve application built from plain arguments: what a KubeRay RayService's
``import_path`` names (``cluster/kuberay/rayservice.yaml``), or ``serve run`` with a config file
whose ``args`` hold the settings.
"""

from __future__ import annotations

import typing
from dataclasses import fields, is_dataclass

from pydantic import TypeAdapter
from ray.serve import Application

from .app import ServiceConfig
from .deploy import JobService


def check_keys(cls: type, args: dict, prefix: str = "") -> None:
    """Refuse a key that is not a field of dataclass ``cls`` (or of a dataclass field, recursively).

    Raises:
        ValueError: naming the key (dotted for nested ones), its value and the settings that exist.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key, value in args.items():
        if key not in known:
            raise ValueError(f"{prefix}{key}={value!r}: not a service setting ({', '.join(sorted(known))})")
        if is_dataclass(hints[key]) and isinstance(value, dict):
            check_keys(hints[key], value, f"{prefix}{key}.")


def build_app(args: dict) -> Application:
    """The `JobService` deployment bound to a `ServiceConfig` made from ``args``.

    Args:
        args: `ServiceConfig` fields by name, as a Serve config's YAML gives them (``data_dir``
            and ``tokens_file`` are required; nested settings such as ``runner`` as mappings;
            numbers may be strings).
    Raises:
        ValueError: naming a setting that does not exist, or one whose value does not parse.
    """
    check_keys(ServiceConfig, args)
    return JobService.bind(TypeAdapter(ServiceConfig).validate_python(dict(args)))
