"""`python -m tasks.chain <name>` and `kt-chain`: the chain command (tasks.studies.chain)."""

from tasks.studies.chain import main


def command() -> None:
    """`kt-chain`: exit code 0 on success (main returns the chain's summary, for callers in Python)."""
    main()


if __name__ == "__main__":
    main()
