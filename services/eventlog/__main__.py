import sys

from services.eventlog.proc import main

sys.exit(main())
