from vtcompress.integrations.demo.cli import main

raise SystemExit(main())
