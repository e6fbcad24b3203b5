"""`python -m convscope_client`: the `convscope-client` command line."""

import sys

from convscope_client.cli import main

sys.exit(main())
