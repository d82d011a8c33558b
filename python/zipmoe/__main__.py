import sys

from ._library import main as _paths

_status = _paths(sys.argv[1:])
if _status is not None:
    raise SystemExit(_status)

from .cli import main  # noqa: E402

raise SystemExit(main())
