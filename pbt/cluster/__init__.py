"""Starting or joining Ray, resources no machine can give, Ctrl-C and SIGTERM."""
