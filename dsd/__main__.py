import sys

from dsd.daemon import main

sys.exit(main())
