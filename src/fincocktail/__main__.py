from fincocktail.cli import main

main()
