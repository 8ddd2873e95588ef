import sys

from dschat.cli import main

sys.exit(main())
