"""The `tiering` command: one module per subcommand."""
