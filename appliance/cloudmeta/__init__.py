"""Cloud instance metadata: what `appliance boot` reads before it starts the runtime.

    aws.py       AWS IMDSv2: user data and instance tags
    gcp.py       GCP metadata server: instance attributes
    http.py      the one HTTP helper both use (never through a proxy), and its failure kinds
    envblock.py  the environment-block formats (KEY=VALUE lines, JSON, gzip, MIME, cloud-init)
    names.py     which variable names are settings, tag/attribute names, secret masking
    resolve.py   the layers merged with their precedence, and where each value came from

Nothing heavy is imported at module level: the CLI must start fast.
"""


class MetadataUnreachable(Exception):
    """No metadata service answered usefully (exit 1: worth retrying later)."""


class MetadataInvalid(Exception):
    """The metadata or the configuration it gives is invalid (exit 2)."""
