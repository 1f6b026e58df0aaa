"""``python -m safeship.cli_entry``: the console script, runnable without the entry point."""

from safeship.cli import main

if __name__ == "__main__":
    main()
