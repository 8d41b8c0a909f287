from twinbot.cli import main

main()
