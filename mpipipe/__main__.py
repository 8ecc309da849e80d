"""`python -m mpipipe ...` is the same as the `mpipipe` command."""

import sys

from mpipipe.cli.main import main

sys.exit(main())
