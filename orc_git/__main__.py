from orc_git.cli import run

run()
