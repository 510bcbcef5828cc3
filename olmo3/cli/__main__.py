from olmo3.cli import main

raise SystemExit(main())
