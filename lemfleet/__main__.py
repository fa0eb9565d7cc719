import sys

from lemfleet.cli import main

sys.exit(main())
