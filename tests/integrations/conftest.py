"""The trainer tests reuse the server tests' kit (``tests/server/server_kit.py``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
