import sys

from tests.hubserver.server import main

sys.exit(main())
