"""Command lines. Each module only parses its arguments (docopt) and calls in."""
