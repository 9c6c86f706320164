"""`python -m emauto`: the `emauto` command."""

import sys

from emauto.cli import main

sys.exit(main())
