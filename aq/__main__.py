from aq.ui.cli import main

main()
