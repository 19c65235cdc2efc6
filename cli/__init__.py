"""The entry layer: the `study` command line (cli.main) and the stage runner of `study run` (cli.runner)."""
