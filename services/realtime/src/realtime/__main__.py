"""`python -m realtime`: serve the realtime service, or `python -m realtime migrate`."""

from social_common.cli import service_main

from realtime.app import spec


def main() -> None:
    service_main(spec())


if __name__ == "__main__":
    main()
