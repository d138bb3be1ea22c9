from celseg.cli import main

raise SystemExit(main())
