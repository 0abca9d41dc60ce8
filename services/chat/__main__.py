import sys

from services.chat.proc import main

sys.exit(main())
