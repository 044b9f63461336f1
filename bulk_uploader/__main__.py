"""`python -m bulk_uploader` is the `bulk-upload` command."""

from bulk_uploader.cli import main

main()
