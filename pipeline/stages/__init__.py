"""One module per stage with a thin `main()`, plus the config and CLI plumbing."""
