"""`python -m mpipipe ...` is the same as the `mpipipe` command."""

import sys

from .cli import main

sys.exit(main())
