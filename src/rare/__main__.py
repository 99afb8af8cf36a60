from rare.cli import run_cli

run_cli()
