from vcompile.cli import main

main()
