"""The formatting stage beside the sinks: filters and the Akto record."""

import appliance.core  # noqa: F401  (chooses the core build before record.py loads)
