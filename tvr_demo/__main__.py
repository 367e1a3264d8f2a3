"""`python -m tvr_demo <command>`."""

from tvr_demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
