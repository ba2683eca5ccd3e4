"""Entry point: `python -m workers --model-name NAME --port PORT ...`, or `--standby`."""

import sys

if __name__ == "__main__":
    if sys.argv[1:] == ["--standby"]:
        from workers.standby import main as standby

        sys.exit(standby())
    from workers.cli import main

    sys.exit(main())
