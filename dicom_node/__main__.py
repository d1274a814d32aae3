from dicom_node.cli import main

raise SystemExit(main())
