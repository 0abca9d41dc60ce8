import sys

from services.trainer.proc import main

sys.exit(main())
