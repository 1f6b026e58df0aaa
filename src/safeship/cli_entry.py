"""The ``safeship`` console script; also ``python -m safeship.cli_entry``.

Without the ``cli`` extra the command prints what to install instead of a traceback.
"""

import sys

from safeship._extras import MissingExtraError


def main() -> None:
    """Console-script entry point: run the CLI, or say which extra it needs."""
    try:
        from safeship.cli import main as run_cli
    except MissingExtraError as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(1)
    run_cli()


if __name__ == "__main__":
    main()
