"""``python -m qastream``: the same CLI as the ``qastream`` console script."""

from qastream.app import main

main()
