"""``python -m cloud.ingest``: the ingestion process."""

from cloud.ingest.service import main

raise SystemExit(main())
