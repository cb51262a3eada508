"""`python -m messages`: serve the messages service, or `python -m messages migrate`."""

from social_common.cli import service_main

from messages.app import spec


def main() -> None:
    service_main(spec())


if __name__ == "__main__":
    main()
