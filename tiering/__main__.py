from tiering.cli.main import main

main()
