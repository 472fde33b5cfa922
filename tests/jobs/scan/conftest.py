"""The scan tests' shared helpers live in scan_fixtures beside this file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
