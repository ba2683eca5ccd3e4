"""Entry point: `python -m workers --model-name NAME --port PORT ...`."""

import sys

from workers.cli import main

if __name__ == "__main__":
    sys.exit(main())
