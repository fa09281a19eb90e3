"""`python -m selflengthen ...`: see selflengthen/cli.py."""
from selflengthen.cli import main

if __name__ == "__main__":
    main()
