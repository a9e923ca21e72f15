"""The `inferq` command."""
