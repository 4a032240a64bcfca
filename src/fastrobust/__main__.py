from fastrobust.cli import main

raise SystemExit(main())
