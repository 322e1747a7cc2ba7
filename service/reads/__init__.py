"""The read side of the API, one service per domain as litestar-fullstack provides its services:
the controllers parse and answer, these decide what is read (the write side is
:class:`dnnprof.profiling.ProfileService`; uploads are :class:`dnnprof.uploads.UploadService`).

- :mod:`.profiles`  stored profiles by filter (the listing's page, an export's stream)
- :mod:`.analyses`  the rows every analysis is computed over (measured and the paper's)
- :mod:`.models`    what the service knows of one model, and its profiles' history
- :mod:`.devices`   every device target seen, and the paper's two
"""

from service.reads.analyses import AnalysisReads, RowQuery
from service.reads.devices import DeviceReads, DeviceView
from service.reads.models import ModelDetail, ModelReads, TargetHistory
from service.reads.profiles import ProfileQuery, ProfileReads

__all__ = [
    "AnalysisReads",
    "DeviceReads",
    "DeviceView",
    "ModelDetail",
    "ModelReads",
    "ProfileQuery",
    "ProfileReads",
    "RowQuery",
    "TargetHistory",
]
