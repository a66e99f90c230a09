"""videogen: text-to-video on Ray. Keyframes first, then every temporal window in parallel, blended and encoded to MP4.

The engine's names load lazily, so ``videogen --help`` and input checks answer without importing
torch and Ray.
"""

__version__ = "0.1.0"

_LAZY = {
    "ClipJob": "driver", "ClipResult": "driver", "Engine": "driver", "JobCanceled": "driver", "Progress": "driver",
    "RequestError": "errors", "ClipRequest": "request", "ClipSpec": "request", "resolve": "request",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'videogen' has no attribute {name!r}")
