"""`python -m auth`: serve the auth service, or `python -m auth migrate`."""

from social_common.cli import service_main

from auth.app import spec


def main() -> None:
    service_main(spec())


if __name__ == "__main__":
    main()
