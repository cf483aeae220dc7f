"""``python -m aioumm``: the command-line tool (see :mod:`aioumm.cli`)."""

from aioumm.cli import main

raise SystemExit(main())
