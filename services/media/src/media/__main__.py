"""`python -m media`: serve the media service, or `python -m media migrate`."""

from social_common.cli import service_main

from media.app import spec


def main() -> None:
    service_main(spec())


if __name__ == "__main__":
    main()
