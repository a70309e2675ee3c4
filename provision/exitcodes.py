"""Exit codes of every provisioning command, on both clouds.

``appliance provision aws|gcp``, ``provision aws|gcp status`` and ``deprovision aws|gcp`` all
return one of these codes. The table is the single source: the ``--help`` epilogs and the
tables in provision/aws/README.md and provision/gcp/README.md are generated from (and tested
against) it, so a script can rely on the same number meaning the same thing on either cloud.
"""

from __future__ import annotations

import textwrap

OK = 0
ERROR = 1
USAGE = 2
PARTIAL = 3
DENIED = 4
QUOTA = 5
CONFLICT = 6
NOT_FOUND = 7
INTERRUPTED = 130

MEANING: dict[int, str] = {
    OK: "success: dry run, nothing to change, or every change applied",
    ERROR: "a cloud API call failed (after retries), the API was unreachable, an operation timed out, "
    "an unexpected error, or the apply was declined at the prompt",
    USAGE: "bad or conflicting arguments, or a referenced resource that does not exist or cannot be "
    "used (checked before planning); also: apply refused without --yes when stdin is not a terminal",
    PARTIAL: "the run finished but some per-resource actions failed (listed in the summary)",
    DENIED: "permission denied (the missing IAM action or permission is named) or missing/invalid credentials",
    QUOTA: "quota or rate limit exceeded (after retries)",
    CONFLICT: "a resource with the deployment's name belongs to someone else, or is still used by another resource",
    NOT_FOUND: "status: the deployment does not exist",
    INTERRUPTED: "interrupted (Ctrl-C); the summary says what was already changed",
}


def epilog() -> str:
    """The ``exit codes:`` block of every provisioning command's ``--help``."""
    width = max(len(str(code)) for code in MEANING)
    lines = [textwrap.fill(text, 96, initial_indent=f"  {code:<{width}}  ", subsequent_indent=" " * (width + 4))
             for code, text in MEANING.items()]
    return "exit codes (the same on AWS and GCP):\n" + "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The exit-code table as it appears in both provisioning READMEs."""
    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| {code} | {text} |" for code, text in MEANING.items()]
    return "\n".join(rows) + "\n"
