import sys

from bioflux.cli import main

sys.exit(main())
