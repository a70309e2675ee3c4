"""The identity of the ``/status`` document (docs/status.md), shared by the runtime that
serves it and the readers (`appliance status`, `appliance tui`) that check it.

``schema`` tells a reader that a JSON answer is this appliance's status document and not
some other service's; ``schema_version`` changes only when a field is removed, renamed or
changes meaning (new fields keep the version: readers ignore keys they do not know). A
reader accepts the versions it was written for and names the mismatch otherwise.
"""

SCHEMA = "mirror-appliance/status"
SCHEMA_VERSION = 1
