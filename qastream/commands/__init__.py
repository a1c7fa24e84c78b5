"""qastream's commands, registered in Faust's CLI (``qastream --help`` lists them)."""
