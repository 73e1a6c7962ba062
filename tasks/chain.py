"""`python -m tasks.chain <name>`: the chain command (tasks.studies.chain), under its documented name."""

from tasks.studies.chain import main

if __name__ == "__main__":
    main()
