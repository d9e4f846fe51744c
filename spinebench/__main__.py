from spinebench.cli import main

main()
