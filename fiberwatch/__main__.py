import sys

from fiberwatch.cli import main

sys.exit(main())
