"""`python -m posts`: serve the posts service, or `python -m posts migrate`."""

from social_common.cli import service_main

from posts.app import spec


def main() -> None:
    service_main(spec())


if __name__ == "__main__":
    main()
