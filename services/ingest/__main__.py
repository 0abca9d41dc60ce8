import sys

from services.ingest.proc import main

sys.exit(main())
