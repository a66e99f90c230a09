"""videogen: text-to-video on Ray. Keyframes first, then every temporal window in parallel, blended and encoded to MP4."""

__version__ = "0.1.0"

from .driver import ClipJob, ClipResult, Engine, JobCanceled, Progress  # noqa: E402
from .errors import RequestError  # noqa: E402
from .request import ClipRequest, ClipSpec, resolve  # noqa: E402

__all__ = ["ClipJob", "ClipRequest", "ClipResult", "ClipSpec", "Engine", "JobCanceled", "Progress", "RequestError", "resolve"]
