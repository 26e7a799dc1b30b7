import sys

from edit_mobile.main import main

sys.exit(main())
