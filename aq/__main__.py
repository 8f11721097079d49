from aq.cli import main

main()
