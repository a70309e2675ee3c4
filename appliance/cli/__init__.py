"""The `appliance` command line: one module per command, registered by ``app``.

    app.py       the parser and ``main`` (the ``appliance`` entry point)
    run.py       appliance run       the runtime on live mirrored traffic
    config.py    appliance config    the effective configuration
    replay.py    appliance replay    capture files through the same pipeline
    resend.py    appliance resend    deliver a spool that Kafka did not take
    demo.py      appliance demo      what `make run` runs
    boot.py      appliance boot      configuration from cloud instance metadata, then run
    flags.py     the flags that set runtime settings (run, config, boot)
    parser.py    argparse conventions: each command's own usage, typed values
    errors.py    CliError and the exit codes

Other packages add their commands through a ``register`` function, listed in ``app.PLUGINS``:
``provision.aws.cli`` / ``provision.gcp.cli`` (provision, deprovision) and ``tui.cli`` (tui,
status). Nothing here imports them at module level, and they import only
``appliance.cli.errors`` (through this package) from here: no import cycle.
"""

from appliance.cli.app import build_parser, main
from appliance.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CliError",
           "build_parser", "main"]
