from twinbot.cli import main

if __name__ == "__main__":  # training processes start by importing this module again (spawn)
    main()
