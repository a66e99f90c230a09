"""The job API as a Ray Serve application built from plain arguments: what a KubeRay RayService's
``import_path`` names (``cluster/kuberay/rayservice.yaml``), or ``serve run``::

    serve run videogen.service.builder:build_app data_dir=/data/service tokens_file=/etc/videogen/tokens
"""

from __future__ import annotations

from dataclasses import fields

from pydantic import TypeAdapter
from ray.serve import Application

from .app import ServiceConfig
from .deploy import JobService


def build_app(args: dict) -> Application:
    """The `JobService` deployment bound to a `ServiceConfig` made from ``args``.

    Args:
        args: `ServiceConfig` fields by name, as strings or YAML values (``data_dir`` and
            ``tokens_file`` are required; numbers may be given as strings).
    Raises:
        ValueError: naming an argument that is not a `ServiceConfig` field, or one that does not parse.
    """
    known = {f.name for f in fields(ServiceConfig)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"{unknown[0]}={args[unknown[0]]!r}: not a service setting ({', '.join(sorted(known))})")
    return JobService.bind(TypeAdapter(ServiceConfig).validate_python(dict(args)))
