"""Worker processes: ``base`` holds the lifecycle, one module per interface."""
